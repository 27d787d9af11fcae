"""docs/grpc.md documents every RPC of every service (its callers as the authorization
table has them), so an internal system finds what each one guarantees."""

from __future__ import annotations

import re
from pathlib import Path

from ccbridge.services.runtime.authz import RPC_CALLERS

DOC = Path(__file__).resolve().parent.parent / "docs" / "grpc.md"


def test_every_rpc_has_a_row_with_its_callers() -> None:
    text = DOC.read_text()
    for service, rpcs in RPC_CALLERS.items():
        package = service.rsplit(".", 1)[0]
        assert f"`{package}`" in text, service
        for rpc, callers in rpcs.items():
            rows = [line for line in text.splitlines() if line.startswith(f"| `{rpc}` |")]
            assert len(rows) == 1, rpc
            cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
            if len(cells) == 4:  # | RPC | caller | guarantees | idempotent? |
                assert set(re.split(r",\s*", cells[1])) == callers, (rpc, cells[1])
            else:  # the operator table: | RPC | guarantees | idempotent? |
                assert "operator" in callers, rpc
            assert cells[-1], f"{rpc}: say whether it is idempotent"
