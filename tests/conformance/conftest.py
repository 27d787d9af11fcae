"""The connector conformance suite's fixtures: the whole mesh as separate processes (the
shape of tests/e2e/conftest.py) configured for one connector, plus that connector's
far-side driver.

``bridge`` is parametrized over the connectors and module-scoped, so each connector gets
one mesh for the whole suite (pytest groups the tests by parameter and tears one mesh
down before starting the next). The ``rt`` parameter needs the session's real Request
Tracker (``rt_peer``): where RT cannot run, its tests are skipped with the how-to hint.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from ccbridge.services.local.supervisor import free_port
from tests.conformance.drivers import (
    FarSideDriver,
    GenesysDriver,
    RtDriver,
    WebhookDriver,
    ZendeskDriver,
)
from tests.support.local_genesys import GENESYS_ENV, start_genesys_sim
from tests.support.mesh import Mesh, running_mesh
from tests.support.rt import RtPeer
from tests.support.zendesk import run_setup, zendesk_sim

T = TypeVar("T")


@dataclass
class Bridge:
    """One connector under test: the running mesh and the far side's driver."""

    mesh: Mesh
    far: FarSideDriver
    subscribed: bool = field(default=False)

    def eventually(
        self, what: str, probe: Callable[[], T | None], *, timeout_s: float | None = None
    ) -> T:
        """Polls ``probe`` until it returns something truthy. The timeout only bounds how
        long a broken mesh keeps the suite waiting; it is never a timing assertion."""
        deadline = time.monotonic() + (timeout_s or self.far.timeout_s)
        last: T | None = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(self.far.probe_interval_s)
        raise AssertionError(
            f"[{self.far.name}] timed out waiting for {what}; last value: {last!r}"[:2000]
        )

    def active_conversation(self, history: int = 4, channel: str = "WHATSAPP") -> tuple[str, str]:
        """A new Infobip conversation (its own end user) handed over and ACTIVE; returns
        the conversation id and the case id at the far side."""
        end_user = f"3859{uuid.uuid4().int % 10**8:08d}"
        if channel == "EMAIL":
            end_user = f"customer-{end_user}@example.com"
        cid = str(self.mesh.conversation(history=history, channel=channel, endUser=end_user)["id"])
        answer = self.mesh.escalate(cid)
        assert answer.status_code == 202, answer.text
        handover = self.eventually(
            "the handover to be ACTIVE",
            lambda: h if (h := self.mesh.handover(cid)).get("state") == "ACTIVE" else None,
        )
        assert handover["connector"] == self.far.name, handover
        case = self.eventually("the case at the far side", lambda: self.far.find_case(cid))
        assert handover["externalId"] == case, (handover, case)
        return cid, case

    def subscribe(self) -> None:
        """Registers the Infobip Subscriptions webhook with the real CLI (once per mesh),
        so Infobip-side closes reach the bridge."""
        if self.subscribed:
            return
        url = f"http://127.0.0.1:{self.mesh.ports['gateway']}/webhooks/infobip/events"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ccbridge.services.cli",
                "infobip",
                "subscribe",
                "--url",
                url,
                "--subscription-id",
                f"conformance-{uuid.uuid4().hex[:8]}",
            ],
            env=self.mesh.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        self.subscribed = True


CONNECTORS = [
    pytest.param("webhook", id="webhook"),
    pytest.param("rt", id="rt", marks=pytest.mark.rt),
    pytest.param("genesys", id="genesys"),
    pytest.param("zendesk", id="zendesk"),
]


@pytest.fixture(scope="module", params=CONNECTORS)
def bridge(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bridge]:
    name = str(request.param)
    log_dir = Path(tmp_path_factory.mktemp(f"conformance-{name}-logs"))
    # Infobip's media links reach the far side as the gateway's signed links (the content
    # family tests open them, and RT downloads them to attach the file).
    extra: dict[str, str] = {"CCBRIDGE_MEDIA_PROXY": "true"}
    far_stack = contextlib.ExitStack()
    if name == "rt":
        peer: RtPeer = request.getfixturevalue("rt_peer")  # skips with the how-to hint
        extra |= {
            "CCBRIDGE_CONNECTORS": "webhook,rt",
            "CCBRIDGE_ROUTING_DEFAULT_CONNECTOR": "rt",
            "CCBRIDGE_RT_URL": peer.url,
            "CCBRIDGE_RT_TOKEN": peer.bridge_token,
            "CCBRIDGE_RT_USER": peer.bridge_user,
            "CCBRIDGE_RT_TIMEOUT_S": "5",
            "CCBRIDGE_POLL_INTERVAL_S": "0.5",
        }

        def make_driver(mesh: Mesh) -> FarSideDriver:
            return RtDriver(peer)
    elif name == "genesys":
        genesys_port = free_port()
        extra |= GENESYS_ENV | {
            "CCBRIDGE_CONNECTORS": "webhook,genesys",
            "CCBRIDGE_ROUTING_DEFAULT_CONNECTOR": "genesys",
            "CCBRIDGE_GENESYS_BASE_URL": f"http://127.0.0.1:{genesys_port}",
            "CCBRIDGE_GENESYS_TIMEOUT_S": "5",
            "CCBRIDGE_POLL_INTERVAL_S": "0.5",
        }

        def make_driver(mesh: Mesh) -> FarSideDriver:
            return GenesysDriver(start_genesys_sim(mesh, genesys_port))
    elif name == "zendesk":
        zendesk = far_stack.enter_context(zendesk_sim(log_dir))
        extra |= {
            "CCBRIDGE_CONNECTORS": "webhook,zendesk",
            "CCBRIDGE_ROUTING_DEFAULT_CONNECTOR": "zendesk",
            **zendesk.env,
        }

        def make_driver(mesh: Mesh) -> FarSideDriver:
            run_setup(mesh.env, mesh.ports["gateway"])  # the operator's step, for real
            return ZendeskDriver(zendesk.url)
    else:

        def make_driver(mesh: Mesh) -> FarSideDriver:
            return WebhookDriver(f"http://127.0.0.1:{mesh.ports['ccaas-sim']}")

    with far_stack, running_mesh(redis_url, log_dir, extra) as mesh:
        driver = make_driver(mesh)
        try:
            yield Bridge(mesh, driver)
        finally:
            driver.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed conformance test shows the tail of the connector's and session's logs."""
    report = yield
    bridge_obj = getattr(item, "funcargs", {}).get("bridge")
    if report.failed and isinstance(bridge_obj, Bridge):
        for name in ("connector", "session"):
            proc = bridge_obj.mesh.group.procs.get(name)
            if proc is not None:
                report.sections.append((f"{name} log (tail)", proc.tail(40)))
    return report
