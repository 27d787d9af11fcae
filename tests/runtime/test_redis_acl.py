"""Every key family the code names is one component's in the Redis ACL table
(services/runtime/redis_acl.py): a new family fails here before it fails in production
with NOPERM."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import ccbridge
from ccbridge.services.runtime.redis_acl import REDIS_COMPONENTS, acl_rules

SERVICES = Path(ccbridge.__path__[0]) / "services"
# f"{self.p}:family..." / f"{p}:family..." in the code.
FAMILY = re.compile(r"\{(?:self\.)?p\}:([a-z_]+)(:?)")


def _families() -> set[tuple[str, bool]]:
    found = set()
    for path in SERVICES.rglob("*.py"):
        for name, more in FAMILY.findall(path.read_text()):
            found.add((name, bool(more)))
    return found


def test_the_scan_finds_the_families() -> None:
    assert {("h", True), ("dlq", False), ("rt", True)} <= _families()


def test_every_key_family_belongs_to_a_component_user() -> None:
    patterns = [
        rule[1:]
        for component in REDIS_COMPONENTS
        for rule in acl_rules(component)
        if rule[0] == "~"
    ]
    for name, more in sorted(_families()):
        key = f"ccb:{name}:x" if more else f"ccb:{name}"
        assert any(fnmatch.fnmatchcase(key, p) for p in patterns), f"{key}: no ACL user may use it"


def test_the_users_share_no_key_family() -> None:
    session, connector = (
        {r for r in acl_rules(c) if r[0] == "~"} for c in ("session", "connector")
    )
    assert not session & connector
