"""The simulators as `ccbridge up` and the tests start them, with generated secrets that
may begin with "-" (token_urlsafe does one time in 32): passed as "--x=value", they are
values, not options (found when CI's random secret began with "-")."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from ccbridge.services.local.run import start_simulators
from ccbridge.services.local.supervisor import ProcessGroup, free_port


def test_secrets_that_start_with_a_dash(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "INFOBIP_API_KEY": "-key-with-a-leading-dash",
        "CCBRIDGE_WEBHOOK_CONNECTOR_SECRET": "-secret-with-a-leading-dash",
        "CCBRIDGE_WEBHOOK_TOKEN": "-token",
    }
    infobip, ccaas = free_port(), free_port()
    group = ProcessGroup(log_dir=tmp_path)
    try:
        start_simulators(group, env, infobip, ccaas, free_port())  # waits until both serve
        answer = httpx.get(
            f"http://127.0.0.1:{infobip}/ccaas/1/conversations",
            headers={"Authorization": "App -key-with-a-leading-dash"},
        )
        assert answer.status_code != 401  # the key was taken as the key
    finally:
        group.stop_all()
