"""``ccbridge infobip ...`` commands: register the gateway with Infobip once.

- ``infobip configure-webhook --url URL``: Update Account Configuration (the legacy
  "all inbound messages" webhook, deprecated by Infobip) to the gateway's
  ``/webhooks/infobip/{token}`` route.
- ``infobip subscribe --url URL``: a Subscriptions API subscription on the
  CUSTOMER_ENGAGEMENT channel, HMAC-signed with INFOBIP_WEBHOOK_SECRET, to the gateway's
  ``/webhooks/infobip/events`` route.

Reads INFOBIP_BASE_URL, INFOBIP_API_KEY (and INFOBIP_WEBHOOK_SECRET, INFOBIP_TIMEOUT_S)
from the environment; :func:`add_infobip_commands` wires them into ``ccbridge``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from ccbridge.services.infobip.client import (
    DEFAULT_SUBSCRIPTION_EVENTS,
    InfobipClient,
    InfobipError,
)
from ccbridge.services.runtime.settings import EnvReader, Secret, SettingsError

_WEBHOOK_PATH = re.compile(r"/webhooks/infobip/([^/]+)$")
_EVENTS_PATH = "/webhooks/infobip/events"
_SUBSCRIPTION_ID = re.compile(r"^[A-Za-z0-9._~-]{1,255}$")
_SHORT_TOKEN = 16


@dataclass(frozen=True)
class InfobipCliSettings:
    """What the infobip commands read from the environment."""

    base_url: str
    api_key: Secret
    timeout_s: float
    webhook_secret: Secret

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, need_secret: bool) -> InfobipCliSettings:
        env = EnvReader(environ)
        base_url = env.str("INFOBIP_BASE_URL")
        if base_url and not base_url.startswith(("https://", "http://")):
            env.errors.append(
                f"INFOBIP_BASE_URL must start with https:// or http://, got {base_url!r}"
            )
        settings = cls(
            base_url=base_url.rstrip("/"),
            api_key=env.secret("INFOBIP_API_KEY"),
            timeout_s=env.float("INFOBIP_TIMEOUT_S", 10.0, minimum=0.1),
            webhook_secret=env.secret("INFOBIP_WEBHOOK_SECRET", required=need_secret, chosen=True),
        )
        env.done("infobip")
        return settings


def add_infobip_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Adds ``infobip configure-webhook`` and ``infobip subscribe`` with ``add_parser``
    (a subparsers object's ``add_parser``); each sets ``func=<callable(args) -> int>``."""
    infobip = add_parser(
        "infobip",
        help="register the gateway with Infobip",
        description="Register the ccbridge gateway with Infobip (reads INFOBIP_BASE_URL, "
        "INFOBIP_API_KEY and, for subscribe, INFOBIP_WEBHOOK_SECRET).",
    )
    commands = infobip.add_subparsers(dest="infobip_command", required=True)

    configure = commands.add_parser(
        "configure-webhook",
        help="point the account's inbound-message webhook at the gateway (legacy, deprecated)",
        description="Update Account Configuration: Infobip POSTs every inbound message of the "
        "account to URL, without authentication (the path token protects it).",
    )
    configure.add_argument(
        "--url", required=True, help="https://<gateway>/webhooks/infobip/<token>"
    )
    configure.set_defaults(func=configure_webhook_command)

    subscribe = commands.add_parser(
        "subscribe",
        help="create a Subscriptions API subscription to the gateway (HMAC)",
        description="Create a CUSTOMER_ENGAGEMENT subscription whose events Infobip POSTs to "
        "URL, signed with HMAC-SHA256 using INFOBIP_WEBHOOK_SECRET.",
    )
    subscribe.add_argument("--url", required=True, help="https://<gateway>/webhooks/infobip/events")
    subscribe.add_argument(
        "--subscription-id",
        default="ccbridge",
        help="subscription id, also the base of the profile id (ccbridge)",
    )
    subscribe.add_argument("--name", default="ccbridge", help="display name (ccbridge)")
    subscribe.add_argument(
        "--events",
        nargs="+",
        default=list(DEFAULT_SUBSCRIPTION_EVENTS),
        metavar="EVENT",
        help="events (default: " + " ".join(DEFAULT_SUBSCRIPTION_EVENTS) + ")",
    )
    subscribe.set_defaults(func=subscribe_command)


def _check_http_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return f"--url must be an absolute http(s) URL, got {url!r}"
    if parts.query or parts.fragment:
        return "--url must not have a query or fragment"
    return None


def _settings(need_secret: bool) -> InfobipCliSettings | None:
    try:
        return InfobipCliSettings.from_env(os.environ, need_secret=need_secret)
    except SettingsError as exc:
        print(f"ccbridge infobip: {exc}", file=sys.stderr)
        return None


Action = Callable[[InfobipClient], Awaitable[dict[str, Any]]]


async def _call(settings: InfobipCliSettings, action: Action) -> dict[str, Any]:
    async with InfobipClient(
        settings.base_url, settings.api_key, timeout_s=settings.timeout_s
    ) as client:
        return await action(client)


def _run(settings: InfobipCliSettings, action: Action) -> int:
    """Runs one call and prints Infobip's answer as JSON (errors to stderr)."""
    try:
        result = asyncio.run(_call(settings, action))
    except InfobipError as exc:
        print(f"ccbridge infobip: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def configure_webhook_command(args: argparse.Namespace) -> int:
    """``infobip configure-webhook``: 0 on success, 1 when Infobip refused, 2 on bad
    input or settings."""
    url: str = args.url
    problem = _check_http_url(url)
    match = _WEBHOOK_PATH.search(urlsplit(url).path)
    if problem is None and match is None:
        problem = "--url must end with the gateway path /webhooks/infobip/<token>"
    elif problem is None and match is not None and match.group(1) == "events":
        problem = (
            "/webhooks/infobip/events is the subscriptions route; "
            "use /webhooks/infobip/<token> here"
        )
    if problem is None and len(url) > 255:
        problem = "--url must be at most 255 characters (Infobip's limit)"
    if problem:
        print(f"ccbridge infobip: {problem}", file=sys.stderr)
        return 2
    if match is not None and len(match.group(1)) < _SHORT_TOKEN:
        print(
            f"ccbridge infobip: warning: the path token is shorter than {_SHORT_TOKEN} "
            "characters; Infobip sends no credentials, the token is the only protection",
            file=sys.stderr,
        )
    settings = _settings(need_secret=False)
    if settings is None:
        return 2
    return _run(settings, lambda client: client.update_account_configuration(url))


def subscribe_command(args: argparse.Namespace) -> int:
    """``infobip subscribe``: 0 on success, 1 when Infobip refused, 2 on bad input or
    settings."""
    url: str = args.url
    problem = _check_http_url(url)
    if problem is None and not _SUBSCRIPTION_ID.match(args.subscription_id):
        problem = "--subscription-id must be 1-255 characters of [A-Za-z0-9._~-]"
    if problem:
        print(f"ccbridge infobip: {problem}", file=sys.stderr)
        return 2
    if not urlsplit(url).path.endswith(_EVENTS_PATH):
        print(
            f"ccbridge infobip: warning: the gateway receives subscription events on "
            f"{_EVENTS_PATH}; {url!r} does not end with it",
            file=sys.stderr,
        )
    settings = _settings(need_secret=True)
    if settings is None:
        return 2
    events = list(dict.fromkeys(args.events))
    secret = settings.webhook_secret
    return _run(
        settings,
        lambda client: client.create_subscription(
            args.subscription_id, args.name, events, url, secret
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m ccbridge.services.infobip.cli infobip ...``)."""
    parser = argparse.ArgumentParser(prog="ccbridge")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_infobip_commands(subparsers.add_parser)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
