"""The stronger durability mode (README "Durability"): with CCBRIDGE_REDIS_WAIT_REPLICAS,
Session answers a webhook 2xx only once a Redis replica holds what it carries — a replica
that does not confirm gets the sender a 503 (it retries) — so the master may die right
after an acknowledgment and the replica (promoted) still has every acknowledged message."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import redis

from ccbridge.services.session.store import agent_message_key
from tests.faults.conftest import FAULT_ENV, start_redis
from tests.faults.harness import Driver, Traffic
from tests.support.mesh import inbound_text, running_mesh, wait_for
from tests.support.redis_server import RedisServer


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)


def test_acknowledged_only_once_a_replica_holds_it(
    tmp_path: Path, redis_servers: list[RedisServer]
) -> None:
    master = start_redis(redis_servers)
    replica = start_redis(redis_servers, replica_of=master.port)
    replica_client = _client(replica)
    wait_for(
        "the replica in sync",
        lambda: replica_client.info("replication").get("master_link_status") == "up",
    )
    env = {
        **FAULT_ENV,
        "CCBRIDGE_REDIS_WAIT_REPLICAS": "1",
        "CCBRIDGE_REDIS_WAIT_TIMEOUT_MS": "300",
    }
    with running_mesh(master.url, tmp_path / "logs", env) as mesh:
        gateway = f"http://127.0.0.1:{mesh.ports['gateway']}"
        driver = Driver(mesh, Traffic(conversations=3, messages=10), [gateway])
        driver.create_conversations()
        driver.run()
        tallies = driver.tally()
        assert all(t.acknowledged == t.sent for t in tallies), tallies

        # A replica that cannot confirm: the webhook is refused with 503, not acknowledged.
        paused = driver.conversations[0]
        doc = inbound_text(paused, f"{paused}-paused", "while the replica is paused")
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            refused = httpx.post(gateway + mesh.webhook_path, json=doc, timeout=30)
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after")
        # Infobip's retry: the message, stored on the master by the refused attempt, is
        # acknowledged once the replica has it.
        wait_for(
            "the retry to be acknowledged",
            lambda: (
                httpx.post(gateway + mesh.webhook_path, json=doc, timeout=30).status_code == 200
            ),
        )

        # The master dies right after the last acknowledgment: the replica holds every
        # acknowledged message (end-user messages and agent replies, by their dedupe ids).
        master.kill()
        for conv, cid in enumerate(driver.conversations):
            seen = set(replica_client.smembers(f"ccb:seen:{{{cid}}}"))
            agent = set(replica_client.smembers(f"ccb:sa:{{{cid}}}"))
            for sent in driver.inbound.values():
                if sent.conv == conv:
                    assert f"{cid}-u{sent.seq:05d}" in seen, sent
            for sent in driver.outbound.values():
                if sent.conv == conv:
                    assert agent_message_key(f"m-{conv:03d}-{sent.seq:05d}") in agent, sent
        assert replica_client.sismember(f"ccb:seen:{{{paused}}}", f"{paused}-paused")
        # The mesh stops with its Redis gone; its Infobip exchanges are still checked.
        master.start()
