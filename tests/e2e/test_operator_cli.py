"""The operator's ``ccbridge`` commands as a person runs them: separate processes against
the real mesh (tests/support/mesh.py), the operator's certificate, the address settings
``ccbridge up`` uses, output piped (so: plain text, no terminal codes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

import orjson
import pytest

from ccbridge.services.runtime.ports import ADDR_ENV, PORT_ENV
from tests.support.mesh import CODE_ROOT, Mesh, wait_for

pytestmark = pytest.mark.e2e


def _operator_env(mesh: Mesh, **extra: str) -> dict[str, str]:
    """The mesh's settings as an operator's shell has them: the ports (no ``*_ADDR``:
    the commands must find Session from CCBRIDGE_SESSION_PORT as ``ccbridge up`` does)
    and the operator's certificate."""
    assert mesh.group.pki is not None
    env = {k: v for k, v in mesh.env.items() if k not in ADDR_ENV.values()}
    env.update({var: str(mesh.ports[name]) for name, var in PORT_ENV.items()})
    env.update(mesh.group.pki["operator"].env())
    env["PYTHONPATH"] = str(CODE_ROOT)
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def ccbridge(
    env: Mapping[str, str], *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "ccbridge.services.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b[" not in result.stdout + result.stderr, "no terminal codes in a pipe"
    return result


def _active(mesh: Mesh) -> str:
    cid = str(mesh.conversation(history=2)["id"])
    assert mesh.escalate(cid).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    return cid


def test_handovers_of_every_state_in_a_table_and_as_json(mesh: Mesh) -> None:
    env = _operator_env(mesh)
    active, closed = _active(mesh), _active(mesh)
    shown = ccbridge(env, "handovers", "close", closed, "--reason", "test").stdout
    assert closed in shown and "state" in shown
    wait_for("CLOSED", lambda: mesh.handover(closed).get("state") == "CLOSED")

    table = ccbridge(env, "handovers", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["CONVERSATION", "STATE", "AGE"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:] if line.strip()}
    assert rows[active] == "ACTIVE" and rows[closed] == "CLOSED"

    listed = orjson.loads(ccbridge(env, "handovers", "list", "--json").stdout)
    states = {h["conversation_id"]: h["state"] for h in listed["handovers"]}
    assert states[active] == "HANDOVER_STATE_ACTIVE"
    assert states[closed] == "HANDOVER_STATE_CLOSED"

    only_active = ccbridge(env, "handovers", "list", "--state", "active").stdout
    assert active in only_active and closed not in only_active

    one = orjson.loads(ccbridge(env, "handovers", "get", active, "--json").stdout)
    assert one["conversation_id"] == active
    shown = ccbridge(env, "handovers", "get", active).stdout
    assert any(line.split() == ["state", "ACTIVE"] for line in shown.splitlines())


def test_the_commands_need_the_operator_certificate_and_name_the_grpc_error(mesh: Mesh) -> None:
    env = _operator_env(mesh)
    no_cert = {k: v for k, v in env.items() if not k.startswith("CCBRIDGE_TLS_")}
    refused = ccbridge(no_cert, "handovers", "list", ok=False)
    assert refused.returncode == 2 and "CCBRIDGE_TLS_CERT is required" in refused.stderr
    missing = ccbridge(env, "handovers", "get", "no-such-conversation", ok=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    # The --session flag still wins over the settings.
    elsewhere = {**env, PORT_ENV["session"]: "1"}
    found = ccbridge(
        elsewhere, "handovers", "--session", f"127.0.0.1:{mesh.ports['session']}", "list"
    )
    assert "CONVERSATION" in found.stdout or "no handovers" in found.stdout


def test_dead_letters_listed_and_all_replayed_with_progress(mesh: Mesh) -> None:
    env = _operator_env(mesh)
    cid = _active(mesh)
    mesh.ccaas.post("/_sim/fail", json={"count": 3, "status": 422, "retryAfter": None})
    texts = ["refused one", "refused two", "refused three"]
    for text in texts:
        mesh.send(cid, text)
    mesh.send(cid, "after the refusals")
    wait_for("the next message", lambda: "after the refusals" in mesh.customer_texts(cid))
    wait_for("3 dead letters", lambda: mesh.handover(cid)["deadLetters"] == 3)

    table = ccbridge(env, "dead-letters", "list", "--conversation-id", cid).stdout
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["ID", "CONVERSATION", "QUEUE"]
    assert len([line for line in lines[1:] if cid in line]) == 3
    assert not any(text in table for text in texts), "no message text in the list"
    listed = orjson.loads(ccbridge(env, "dead-letters", "list", "--json").stdout)
    mine = [d for d in listed["dead_letters"] if d["conversation_id"] == cid]
    assert len(mine) == 3 and not any(text in orjson.dumps(mine).decode() for text in texts)

    replayed = ccbridge(env, "dead-letters", "replay", "--all", "--conversation-id", cid)
    assert "replayed 3 of 3 dead letters" in replayed.stderr
    wait_for(
        "the replayed messages",
        lambda: sorted(mesh.customer_texts(cid)) == sorted([*texts, "after the refusals"]),
    )
    assert (
        "no dead letters" in ccbridge(env, "dead-letters", "list", "--conversation-id", cid).stdout
    )


def test_doctor_says_ok_and_what_to_fix(mesh: Mesh) -> None:
    env = _operator_env(mesh)
    subscribe = ccbridge(
        env,
        "infobip",
        "subscribe",
        "--url",
        f"{env['CCBRIDGE_PUBLIC_URL']}/webhooks/infobip/events",
    )
    assert subscribe.returncode == 0
    healthy = ccbridge(env, "doctor")
    for check in ("settings", "redis", "mesh", "infobip", "subscription", "connector"):
        assert any(line.split()[:2] == ["ok", check] for line in healthy.stdout.splitlines()), (
            healthy.stdout
        )

    broken = _operator_env(
        mesh,
        INFOBIP_API_KEY="a-key-infobip-refuses",
        CCBRIDGE_WEBHOOK_CONNECTOR_URL="http://127.0.0.1:9/nothing-listens",
        CCBRIDGE_ESCALATION_TOKEN="short",
    )
    result = ccbridge(broken, "doctor", "--json", ok=False)
    assert result.returncode == 1
    verdicts = {r["check"]: r for r in orjson.loads(result.stdout)}
    assert (
        not verdicts["settings"]["ok"]
        and "CCBRIDGE_ESCALATION_TOKEN" in verdicts["settings"]["detail"]
    )
    assert verdicts["redis"]["ok"] and verdicts["mesh"]["ok"]
    assert not verdicts["infobip"]["ok"] and "401" in verdicts["infobip"]["detail"]
    assert "INFOBIP_API_KEY" in verdicts["infobip"]["fix"]
    assert (
        not verdicts["connector"]["ok"]
        and "CCBRIDGE_WEBHOOK_CONNECTOR_URL" in verdicts["connector"]["fix"]
    )
    secret = broken["INFOBIP_API_KEY"]
    assert secret not in result.stdout + result.stderr, "secrets are never printed"

    ccbridge(env, "infobip", "subscriptions", "delete", "ccbridge")
    gone = ccbridge(env, "doctor", "--skip", "settings", "--skip", "connector", ok=False)
    assert gone.returncode == 1
    fail = [
        line for line in gone.stdout.splitlines() if line.split()[:2] == ["FAIL", "subscription"]
    ]
    assert fail and "ccbridge infobip subscribe --url" in gone.stdout


def test_the_python_example_of_the_grpc_doc_runs(mesh: Mesh) -> None:
    doc = (CODE_ROOT.parent / "docs" / "grpc.md").read_text()
    example = doc.split("### Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    cid = _active(mesh)
    env = _operator_env(mesh, SESSION_ADDR=f"127.0.0.1:{mesh.ports['session']}")
    result = subprocess.run(
        [sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert any(line.split()[0] == cid for line in result.stdout.splitlines())


def test_doctor_inside_a_components_pod_checks_what_that_pod_has(mesh: Mesh) -> None:
    """With the connector's own certificate and settings (``kubectl exec deploy/connector
    -- ccbridge doctor --component connector …``): ListConnectors is not its to call, so
    the far sides of its CCBRIDGE_CONNECTORS are checked directly."""
    assert mesh.group.pki is not None
    env = _operator_env(mesh)
    env.update(mesh.group.pki["connector"].env())
    result = ccbridge(
        env, "doctor", "--component", "connector", "--skip", "infobip", "--skip", "subscription"
    )
    lines = result.stdout.splitlines()
    settings = next(line for line in lines if line.split()[:2] == ["ok", "settings"])
    assert "the settings of connector are valid" in settings
    connector = next(line for line in lines if line.split()[:2] == ["ok", "connector"])
    assert "ListConnectors is for the operator identity" in connector
    assert "webhook http://127.0.0.1:" in connector
