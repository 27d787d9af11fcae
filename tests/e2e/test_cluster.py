"""End to end on Redis Cluster: every component as a process with ``REDIS_URL`` a
``redis+cluster://`` URL of three local masters (tests/support/redis_cluster.py). A whole
handover both ways (escalation, case opened, end-user messages to the CCaaS in order,
agent replies to Infobip, close), and a Session SIGKILL mid-relay losing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROUTING_RULES
from tests.e2e.test_handover_flow import (
    test_full_handover_with_1500_messages_of_history as _handover_scenario,
)
from tests.e2e.test_handover_flow import (
    test_sigkill_session_while_relaying_500_messages as _sigkill_scenario,
)
from tests.support.mesh import Mesh, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster_mesh(
    redis_cluster_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    rules = tmp_path_factory.mktemp("cluster-routing") / "rules.yaml"
    rules.write_text(ROUTING_RULES)
    log_dir = Path(tmp_path_factory.mktemp("cluster-mesh-logs"))
    with running_mesh(redis_cluster_url, log_dir, {"CCBRIDGE_ROUTING_RULES": str(rules)}) as handle:
        yield handle


def test_a_whole_handover_both_ways(cluster_mesh: Mesh) -> None:
    _handover_scenario(cluster_mesh)


def test_sigkill_session_mid_relay_loses_nothing(cluster_mesh: Mesh) -> None:
    _sigkill_scenario(cluster_mesh)
