"""The Redis ACL user of each component that uses Redis: only the commands and keys it needs.

Session and connector each log in as their own user (the user and password in their
``REDIS_URL``); gateway, history and routing use no Redis. The rules are ACL SETUSER
arguments (``acl_rules``); docs/security.md shows them as ``ACL SETUSER`` lines, and
tests/e2e/test_redis_acl_tls.py runs the mesh on a TLS Redis with exactly these users and
checks that Redis denied nothing. A new key family must be added here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Data commands, Lua scripts (which Redis checks command by command, key by key),
# connection set-up, and on Redis Cluster the client's topology read (CLUSTER SLOTS);
# nothing that reads or changes the server's configuration or touches every key
# (FLUSHALL, KEYS, CONFIG, DEBUG, ... are @dangerous).
COMMANDS = (
    "+@read",
    "+@write",
    "+@scripting",
    "+@connection",
    "+time",
    "+cluster|slots",
    "-@dangerous",
)

# Key patterns under the prefix (``CCBRIDGE_REDIS_PREFIX``), from the layouts in
# services/session/store.py and services/connector/store.py.
_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "session": (
            "{p}:h:*",
            "{p}:in:*",
            "{p}:out:*",
            "{p}:seen:*",
            "{p}:sa:*",
            "{p}:snd:*",
            "{p}:ob:*",
            "{p}:ti:*",
            "{p}:lease:*",
            "{p}:ext:*",
            "{p}:park:*",
            "{p}:parked",
            "{p}:due",
            "{p}:due:*",
            "{p}:state:*",
            "{p}:dlq",
            "{p}:dl:*",
            "{p}:dlc:*",
            "{p}:stats",
            "{p}:reconcile",  # older releases' progress, read during an upgrade
            "{p}:reconcile:*",
            "{p}:live:*",
            "{p}:fs:*",
            "{p}:tl:*",
        ),
        "connector": (
            "{p}:connector:*",
            "{p}:rt:*",
            "{p}:zendesk:*",
            # Older releases' keys, read during a rolling upgrade (connector/store.py).
            "ccbridge:connector:poll-lease:*",
            "ccb:rt:*",
        ),
    }
)
REDIS_COMPONENTS = tuple(_KEYS)


def acl_rules(component: str, prefix: str = "ccb") -> list[str]:
    """The keys and commands of ``component``'s user, as ACL SETUSER rules."""
    keys = dict.fromkeys(f"~{pattern.format(p=prefix)}" for pattern in _KEYS[component])
    return [*keys, *COMMANDS]


def acl_setuser(component: str, password: str, prefix: str = "ccb") -> list[str]:
    """The whole ``ACL SETUSER ccbridge-<component> reset on >password …`` command."""
    return [
        "ACL",
        "SETUSER",
        f"ccbridge-{component}",
        "reset",
        "on",
        f">{password}",
        *acl_rules(component, prefix),
    ]
