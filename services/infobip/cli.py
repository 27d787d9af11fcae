"""``ccbridge infobip ...`` commands: register the gateway with Infobip.

- ``infobip subscribe --url URL [--auth hmac|basic]``: the supported inbound path, a
  Subscriptions API subscription on the CUSTOMER_ENGAGEMENT channel to the gateway's
  ``/webhooks/infobip/events`` route, signed with HMAC (INFOBIP_WEBHOOK_SECRET,
  INFOBIP_WEBHOOK_HMAC_ALGORITHM) or with Basic credentials (INFOBIP_WEBHOOK_BASIC_USER,
  INFOBIP_WEBHOOK_BASIC_PASSWORD). Idempotent: it makes the subscription match (creates
  it, updates its name and events, or moves it to a new notification profile when the
  URL or the kind of authentication changed; ``--force`` also replaces the credentials,
  which Infobip never shows back).
- ``infobip subscriptions list|show ID|delete ID``: what the account has.
- ``infobip configure-webhook --url URL``: Update Account Configuration (the legacy
  "all inbound messages" webhook, deprecated by Infobip, still working) to the gateway's
  ``/webhooks/infobip/{token}`` route.

Reads INFOBIP_BASE_URL, INFOBIP_API_KEY and INFOBIP_TIMEOUT_S from the environment;
:func:`add_infobip_commands` wires them into ``ccbridge``. Secrets are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from ccbridge.services.infobip.client import (
    DEFAULT_SUBSCRIPTION_EVENTS,
    InfobipClient,
    InfobipError,
    InfobipNotFound,
    webhook_profile,
)
from ccbridge.services.infobip.webhook_auth import HmacScheme
from ccbridge.services.runtime.settings import EnvReader, Secret, SettingsError

_WEBHOOK_PATH = re.compile(r"/webhooks/infobip/([^/]+)$")
_EVENTS_PATH = "/webhooks/infobip/events"
# Infobip allows 255 characters; ccbridge appends "-<kind>-<UTC stamp>" for the
# profile and security ids it derives from the subscription id.
_SUBSCRIPTION_ID = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")
_SHORT_TOKEN = 16
_KINDS = ("hmac", "basic")


@dataclass(frozen=True)
class InfobipCliSettings:
    """What the infobip commands read from the environment."""

    base_url: str
    api_key: Secret
    timeout_s: float
    webhook_secret: Secret
    hmac: HmacScheme
    basic_user: str
    basic_password: Secret

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, auth: str = "") -> InfobipCliSettings:
        """``auth``: "hmac" or "basic" when the command sets up that authentication (its
        credentials are then required), "" otherwise."""
        env = EnvReader(environ)
        base_url = env.str("INFOBIP_BASE_URL")
        if base_url and not base_url.startswith(("https://", "http://")):
            env.errors.append(
                f"INFOBIP_BASE_URL must start with https:// or http://, got {base_url!r}"
            )
        # A comma-separated rotation list (as the gateway reads it): the first one signs.
        secrets = env.secret(
            "INFOBIP_WEBHOOK_SECRET", required=auth == "hmac", chosen=True, listed=True
        )
        first_secret = next((p.strip() for p in secrets.value.split(",") if p.strip()), "")
        basic_user = env.secret("INFOBIP_WEBHOOK_BASIC_USER", required=auth == "basic")
        basic_password = env.secret(
            "INFOBIP_WEBHOOK_BASIC_PASSWORD", required=auth == "basic", chosen=True
        )
        settings = cls(
            base_url=base_url.rstrip("/"),
            api_key=env.secret("INFOBIP_API_KEY"),
            timeout_s=env.float("INFOBIP_TIMEOUT_S", 10.0, minimum=0.1),
            webhook_secret=Secret(first_secret),
            hmac=HmacScheme.read(env),
            basic_user=basic_user.value,
            basic_password=basic_password,
        )
        env.done("infobip")
        return settings

    def credentials(self, auth: str) -> dict[str, str]:
        """The security profile's credentials for ``auth`` (hmac or basic)."""
        if auth == "hmac":
            return {"secretKey": self.webhook_secret.value, "algorithm": self.hmac.algorithm}
        return {"username": self.basic_user, "password": self.basic_password.value}


def add_infobip_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Adds ``infobip subscribe``, ``infobip subscriptions list|show|delete`` and
    ``infobip configure-webhook`` with ``add_parser`` (a subparsers object's
    ``add_parser``); each sets ``func=<callable(args) -> int>``."""
    infobip = add_parser(
        "infobip",
        help="register the gateway with Infobip",
        description="Register the ccbridge gateway with Infobip (reads INFOBIP_BASE_URL, "
        "INFOBIP_API_KEY and the webhook credentials).",
    )
    commands = infobip.add_subparsers(dest="infobip_command", required=True)

    subscribe = commands.add_parser(
        "subscribe",
        help="create or update the Subscriptions API subscription to the gateway",
        description="Make the CUSTOMER_ENGAGEMENT subscription whose events Infobip POSTs to "
        "URL match these options (idempotent). --auth hmac signs them with "
        "INFOBIP_WEBHOOK_SECRET (the first of the list) and INFOBIP_WEBHOOK_HMAC_ALGORITHM; "
        "--auth basic sends INFOBIP_WEBHOOK_BASIC_USER / INFOBIP_WEBHOOK_BASIC_PASSWORD.",
    )
    subscribe.add_argument("--url", required=True, help="https://<gateway>/webhooks/infobip/events")
    subscribe.add_argument(
        "--auth", choices=_KINDS, default="hmac", help="how Infobip authenticates (hmac)"
    )
    subscribe.add_argument(
        "--subscription-id", default="ccbridge", help="subscription id (ccbridge)"
    )
    subscribe.add_argument("--name", default="ccbridge", help="display name (ccbridge)")
    subscribe.add_argument(
        "--events",
        nargs="+",
        default=list(DEFAULT_SUBSCRIPTION_EVENTS),
        metavar="EVENT",
        help="events (default: " + " ".join(DEFAULT_SUBSCRIPTION_EVENTS) + ")",
    )
    subscribe.add_argument(
        "--force",
        action="store_true",
        help="also replace the credentials (a new notification profile), e.g. after "
        "rotating the secret: Infobip never shows credentials back, so they cannot be compared",
    )
    subscribe.add_argument("--json", action="store_true", help="print JSON")
    subscribe.set_defaults(func=subscribe_command)

    subscriptions = commands.add_parser(
        "subscriptions",
        help="list, show or delete CUSTOMER_ENGAGEMENT subscriptions",
        description="The account's CUSTOMER_ENGAGEMENT subscriptions.",
    )
    actions = subscriptions.add_subparsers(dest="subscriptions_command", required=True)
    listing = actions.add_parser("list", help="every subscription")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=list_command)
    show = actions.add_parser("show", help="one subscription with its webhook URL")
    show.add_argument("subscription_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=show_command)
    delete = actions.add_parser(
        "delete",
        help="delete a subscription (and the profile ccbridge made for it)",
        description="Deletes the subscription; when its notification profile and security "
        "settings are the ones `subscribe` made for it (ids starting with the "
        "subscription id), they are deleted too. Deleting one that does not exist succeeds.",
    )
    delete.add_argument("subscription_id")
    delete.add_argument("--keep-profile", action="store_true", help="keep the notification profile")
    delete.add_argument("--json", action="store_true", help="print JSON")
    delete.set_defaults(func=delete_command)

    configure = commands.add_parser(
        "configure-webhook",
        help="point the account's inbound-message webhook at the gateway (deprecated)",
        description="Update Account Configuration (deprecated by Infobip, still working): "
        "Infobip POSTs every inbound message of the account to URL, without "
        "authentication (the path token protects it). Prefer `subscribe`.",
    )
    configure.add_argument(
        "--url", required=True, help="https://<gateway>/webhooks/infobip/<token>"
    )
    configure.set_defaults(func=configure_webhook_command)


def _check_http_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return f"--url must be an absolute http(s) URL, got {url!r}"
    if parts.query or parts.fragment:
        return "--url must not have a query or fragment"
    return None


def _settings(auth: str = "") -> InfobipCliSettings | None:
    try:
        return InfobipCliSettings.from_env(os.environ, auth=auth)
    except SettingsError as exc:
        print(f"ccbridge infobip: {exc}", file=sys.stderr)
        return None


def _fail(problem: str, code: int = 2) -> int:
    print(f"ccbridge infobip: {problem}", file=sys.stderr)
    return code


Action = Callable[[InfobipClient], Awaitable[Any]]


async def _call(settings: InfobipCliSettings, action: Action) -> Any:
    async with InfobipClient(
        settings.base_url, settings.api_key, timeout_s=settings.timeout_s
    ) as client:
        return await action(client)


def _run(settings: InfobipCliSettings, action: Action) -> tuple[int, Any]:
    """Runs the calls; (0, result), or (1, None) with Infobip's refusal on stderr."""
    try:
        return 0, asyncio.run(_call(settings, action))
    except InfobipError as exc:
        return _fail(str(exc), 1), None


def _json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


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
        return _fail(problem)
    if match is not None and len(match.group(1)) < _SHORT_TOKEN:
        print(
            f"ccbridge infobip: warning: the path token is shorter than {_SHORT_TOKEN} "
            "characters; Infobip sends no credentials, the token is the only protection",
            file=sys.stderr,
        )
    print(
        "ccbridge infobip: note: Update Account Configuration is deprecated by Infobip; "
        "`ccbridge infobip subscribe` is the supported path",
        file=sys.stderr,
    )
    settings = _settings()
    if settings is None:
        return 2
    code, result = _run(settings, lambda client: client.update_account_configuration(url))
    if code == 0:
        print(_json(result))
    return code


# ---- subscribe


@dataclass(frozen=True)
class _Wanted:
    subscription_id: str
    name: str
    events: list[str]
    url: str
    auth: str
    credentials: Mapping[str, str]
    force: bool

    def new_ids(self) -> str:
        """Id of a new profile and of its security settings (one string, two namespaces):
        the subscription id, the kind, and a UTC stamp so a replacement never collides."""
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
        return f"{self.subscription_id}-{self.auth}-{stamp}"

    def kind_of(self, auth_id: str) -> str:
        """hmac/basic for security settings this command made for the subscription."""
        prefix = f"{self.subscription_id}-"
        if auth_id.startswith(prefix):
            kind = auth_id[len(prefix) :].split("-", 1)[0]
            if kind in _KINDS:
                return kind
        return ""


def _profile_ids(subscription: Mapping[str, Any]) -> tuple[str, str]:
    profile = subscription.get("profile")
    profile = profile if isinstance(profile, Mapping) else {}
    security = profile.get("security")
    security = security if isinstance(security, Mapping) else {}
    return str(profile.get("profileId") or ""), str(security.get("authId") or "")


async def _cleanup(client: InfobipClient, subscription_id: str, profile_id: str) -> list[str]:
    """Deletes a profile (and its security settings) `subscribe` made for the
    subscription; returns warnings (a failure here leaves only an unused profile)."""
    warnings: list[str] = []
    if not profile_id.startswith(f"{subscription_id}-"):
        return warnings
    try:
        profile = await client.get_profile(profile_id)
        _, auth_id = _profile_ids({"profile": profile})
        await client.delete_profile(profile_id)
        if auth_id.startswith(f"{subscription_id}-"):
            await client.delete_security(auth_id)
    except InfobipNotFound:
        pass
    except InfobipError as exc:
        warnings.append(f"the old profile {profile_id} was left: {exc}")
    return warnings


async def _subscribe(client: InfobipClient, wanted: _Wanted) -> dict[str, Any]:
    """Makes the subscription match ``wanted``; returns what was done."""
    sid = wanted.subscription_id
    warnings: list[str] = []
    try:
        current: dict[str, Any] | None = await client.get_subscription(sid)
    except InfobipNotFound:
        current = None
    if current is None:
        ids = wanted.new_ids()
        new = webhook_profile(ids, ids, wanted.url, wanted.credentials)
        await client.create_subscription(sid, wanted.name, wanted.events, new)
        action = "created"
    else:
        profile_id, _ = _profile_ids(current)
        try:
            profile = await client.get_profile(profile_id) if profile_id else None
        except InfobipNotFound:
            profile = None
        webhook = profile.get("webhook") if profile else None
        url = webhook.get("notifyUrl") if isinstance(webhook, Mapping) else None
        _, auth_id = _profile_ids({"profile": profile or {}})
        new_profile = wanted.force or url != wanted.url or wanted.kind_of(auth_id) != wanted.auth
        events = current.get("events")
        same_events = isinstance(events, list) and set(map(str, events)) == set(wanted.events)
        if not new_profile and same_events and current.get("name") == wanted.name:
            action = "unchanged"
        elif new_profile:
            # New profile first, then the subscription moves to it: no gap in delivery.
            ids = wanted.new_ids()
            await client.create_profile(webhook_profile(ids, ids, wanted.url, wanted.credentials))
            await client.update_subscription(sid, wanted.name, wanted.events, ids)
            warnings += await _cleanup(client, sid, profile_id)
            action = "replaced profile"
        else:
            await client.update_subscription(sid, wanted.name, wanted.events, profile_id)
            action = "updated"
    warnings += await _others_to_the_same_url(client, wanted)
    return {
        "action": action,
        "subscription": await _describe(client, sid),
        "warnings": warnings,
    }


async def _others_to_the_same_url(client: InfobipClient, wanted: _Wanted) -> list[str]:
    """Other subscriptions sending some of the same events to the same URL: each event
    would arrive twice (the gateway drops the copy, but it is wasted work)."""
    warnings = []
    for other in await client.list_subscriptions():
        other_id = str(other.get("subscriptionId") or "")
        events = other.get("events")
        if other_id == wanted.subscription_id or not isinstance(events, list):
            continue
        if not set(map(str, events)) & set(wanted.events):
            continue
        profile_id, _ = _profile_ids(other)
        try:
            profile = await client.get_profile(profile_id) if profile_id else {}
        except InfobipNotFound:
            continue
        webhook = profile.get("webhook")
        if isinstance(webhook, Mapping) and webhook.get("notifyUrl") == wanted.url:
            warnings.append(
                f"subscription {other_id} also sends these events to {wanted.url}; delete it "
                f"with `ccbridge infobip subscriptions delete {other_id}`"
            )
    return warnings


async def _describe(client: InfobipClient, subscription_id: str) -> dict[str, Any]:
    """The subscription with its profile's webhook URL and security id."""
    subscription = await client.get_subscription(subscription_id)
    profile_id, _ = _profile_ids(subscription)
    if profile_id:
        try:
            subscription["profile"] = await client.get_profile(profile_id)
        except InfobipNotFound:
            pass
    return subscription


def _human(subscription: Mapping[str, Any]) -> str:
    profile_id, auth_id = _profile_ids(subscription)
    profile = subscription.get("profile")
    webhook = profile.get("webhook") if isinstance(profile, Mapping) else None
    url = webhook.get("notifyUrl") if isinstance(webhook, Mapping) else None
    events = subscription.get("events")
    lines = [
        f"subscription {subscription.get('subscriptionId')} ({subscription.get('name')})",
        "  events:   " + (" ".join(map(str, events)) if isinstance(events, list) else "-"),
        f"  url:      {url or '-'}",
        f"  profile:  {profile_id or '-'}",
        f"  security: {auth_id or '-'}",
    ]
    return "\n".join(lines)


def subscribe_command(args: argparse.Namespace) -> int:
    """``infobip subscribe``: 0 on success (also when nothing changed), 1 when Infobip
    refused, 2 on bad input or settings."""
    url: str = args.url
    problem = _check_http_url(url)
    if problem is None and len(url) > 512:
        problem = "--url must be at most 512 characters (Infobip's limit)"
    if problem is None and not _SUBSCRIPTION_ID.match(args.subscription_id):
        problem = "--subscription-id must be 1-200 characters of [A-Za-z0-9._~-]"
    if problem is None and not 1 <= len(args.name) <= 255:
        problem = "--name must be 1-255 characters"
    if problem:
        return _fail(problem)
    if not urlsplit(url).path.endswith(_EVENTS_PATH):
        print(
            f"ccbridge infobip: warning: the gateway receives subscription events on "
            f"{_EVENTS_PATH}; {url!r} does not end with it",
            file=sys.stderr,
        )
    settings = _settings(args.auth)
    if settings is None:
        return 2
    wanted = _Wanted(
        subscription_id=args.subscription_id,
        name=args.name,
        events=list(dict.fromkeys(args.events)),
        url=url,
        auth=args.auth,
        credentials=settings.credentials(args.auth),
        force=args.force,
    )
    code, result = _run(settings, lambda client: _subscribe(client, wanted))
    if code:
        return code
    for warning in result["warnings"]:
        print(f"ccbridge infobip: warning: {warning}", file=sys.stderr)
    if args.json:
        print(_json(result))
    else:
        print(f"{result['action']}: {_human(result['subscription'])}")
    return 0


# ---- subscriptions list | show | delete


def list_command(args: argparse.Namespace) -> int:
    """``infobip subscriptions list``."""
    settings = _settings()
    if settings is None:
        return 2
    code, found = _run(settings, lambda client: client.list_subscriptions())
    if code:
        return code
    if args.json:
        print(_json(found))
        return 0
    if not found:
        print("no CUSTOMER_ENGAGEMENT subscriptions")
    for item in found:
        profile_id, _ = _profile_ids(item)
        events = item.get("events")
        shown = " ".join(map(str, events)) if isinstance(events, list) else "-"
        print(f"{item.get('subscriptionId')}\t{item.get('name')}\t{profile_id}\t{shown}")
    return 0


def show_command(args: argparse.Namespace) -> int:
    """``infobip subscriptions show ID``: 1 when there is no such subscription."""
    settings = _settings()
    if settings is None:
        return 2
    code, found = _run(settings, lambda client: _describe(client, args.subscription_id))
    if code:
        return code
    print(_json(found) if args.json else _human(found))
    return 0


async def _delete(client: InfobipClient, subscription_id: str, keep: bool) -> dict[str, Any]:
    try:
        deleted = await client.delete_subscription(subscription_id)
    except InfobipNotFound:
        return {"action": "absent", "subscriptionId": subscription_id, "warnings": []}
    profile_id, _ = _profile_ids(deleted)
    warnings = [] if keep else await _cleanup(client, subscription_id, profile_id)
    return {"action": "deleted", "subscriptionId": subscription_id, "warnings": warnings}


def delete_command(args: argparse.Namespace) -> int:
    """``infobip subscriptions delete ID``: 0 also when it did not exist (idempotent)."""
    settings = _settings()
    if settings is None:
        return 2
    code, result = _run(
        settings, lambda client: _delete(client, args.subscription_id, args.keep_profile)
    )
    if code:
        return code
    for warning in result["warnings"]:
        print(f"ccbridge infobip: warning: {warning}", file=sys.stderr)
    if args.json:
        print(_json(result))
    elif result["action"] == "absent":
        print(f"no subscription {args.subscription_id} (nothing to delete)")
    else:
        print(f"deleted subscription {args.subscription_id}")
    return 0


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
