"""Routing sends each handover to any enabled connector (docs/routing.md, "One bridge,
several contact centers"): VIP conversations to Genesys Cloud, the rest to Zendesk, in
one mesh, each case found at its own far side through that side's own API (the
simulators' control APIs, as the conformance drivers read them)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ccbridge.services.local.supervisor import free_port
from tests.conformance.drivers import GenesysDriver, ZendeskDriver
from tests.support.local_genesys import GENESYS_ENV, start_genesys_sim
from tests.support.mesh import Mesh, running_mesh
from tests.support.zendesk import run_setup, zendesk_sim

pytestmark = pytest.mark.e2e

T = TypeVar("T")

RULES = """\
default:
  connector: zendesk
rules:
  - name: vip
    match:
      tags_any: [vip]
    route:
      connector: genesys
      queue: vip
      priority: 10
"""


def _eventually(what: str, probe: Callable[[], T | None], timeout_s: float = 90.0) -> T:
    """Polls until ``probe`` answers; the timeout only bounds a broken mesh's wait."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def _hand_over(mesh: Mesh, tags: list[str]) -> tuple[str, dict[str, Any]]:
    """A new conversation (its own end user) escalated with ``tags``; returns its id and
    the ACTIVE handover."""
    end_user = f"3859{uuid.uuid4().int % 10**8:08d}"
    cid = str(mesh.conversation(history=2, endUser=end_user)["id"])
    answer = mesh.escalate(cid, tags=tags)
    assert answer.status_code == 202, answer.text
    handover = _eventually(
        f"handover {cid} ACTIVE",
        lambda: h if (h := mesh.handover(cid)).get("state") == "ACTIVE" else None,
    )
    return cid, handover


def test_vip_goes_to_genesys_and_the_rest_to_zendesk(redis_url: str, tmp_path: Path) -> None:
    rules = tmp_path / "routing.yaml"
    rules.write_text(RULES)
    genesys_port = free_port()
    with zendesk_sim(tmp_path / "zendesk-logs") as zendesk:
        extra = {
            **GENESYS_ENV,
            **zendesk.env,
            "CCBRIDGE_CONNECTORS": "zendesk,genesys",
            "CCBRIDGE_ROUTING_DEFAULT_CONNECTOR": "zendesk",
            "CCBRIDGE_ROUTING_RULES": str(rules),
            "CCBRIDGE_GENESYS_BASE_URL": f"http://127.0.0.1:{genesys_port}",
            "CCBRIDGE_GENESYS_TIMEOUT_S": "5",
            "CCBRIDGE_POLL_INTERVAL_S": "0.5",
        }
        with running_mesh(redis_url, tmp_path / "logs", extra) as mesh:
            run_setup(mesh.env, mesh.ports["gateway"])
            genesys = GenesysDriver(start_genesys_sim(mesh, genesys_port))
            desk = ZendeskDriver(zendesk.url)
            try:
                vip, vip_handover = _hand_over(mesh, ["vip"])
                other, other_handover = _hand_over(mesh, ["billing"])

                assert vip_handover["connector"] == "genesys", vip_handover
                assert vip_handover["routing"]["queue"] == "vip", vip_handover
                assert other_handover["connector"] == "zendesk", other_handover

                # Each case is at its own far side, and only there.
                assert genesys.find_case(vip) == vip_handover["externalId"]
                assert desk.find_case(other) == other_handover["externalId"]
                assert genesys.find_case(other) is None
                assert desk.find_case(vip) is None

                # The end users' messages follow their handovers to their own desks.
                mesh.send(vip, "I am a gold customer")
                mesh.send(other, "my invoice is wrong")
                _eventually(
                    "the VIP message at Genesys",
                    lambda: (
                        "I am a gold customer"
                        in genesys.customer_messages(str(vip_handover["externalId"]))
                    ),
                )
                _eventually(
                    "the other message at Zendesk",
                    lambda: (
                        "my invoice is wrong"
                        in desk.customer_messages(str(other_handover["externalId"]))
                    ),
                )
            finally:
                genesys.close()
                desk.close()
