"""``ccbridge doctor``: is this installation able to hand conversations over, and if not,
what to fix.

It reads the environment it is run in (as ``ccbridge up`` and the components do) and
checks, in order:

- ``settings``: every component's settings, with the components' own readers
  (services/local/settings_check.py);
- ``redis``: ``REDIS_URL`` answers PING;
- ``mesh``: each gRPC service an operator calls (session, routing, connector: what the
  operator pod's NetworkPolicy lets it reach) answers its health check, dialled with the
  operator's certificate at the address the admin commands use (``<PEER>_ADDR``, else
  ``CCBRIDGE_<COMPONENT>_PORT`` on loopback);
- ``infobip``: ``INFOBIP_API_KEY`` is accepted by ``INFOBIP_BASE_URL`` (one Get
  Conversations call for one conversation: authenticated, read-only);
- ``subscription``: the Subscriptions API subscription (``--subscription-id``, default
  ``ccbridge``) exists, carries the events ccbridge needs and points at the gateway's
  ``/webhooks/infobip/events`` (at ``CCBRIDGE_PUBLIC_URL`` when that is set);
- ``connector``: the connector service lists its connectors (ListConnectors), and each
  connector's far side answers: the webhook connector's endpoint answers HTTP (any
  status below 500; the contract is POST only, so a GET is expected to get 404/405), RT
  accepts the token (REST2 ``GET /queues/all``) and shows the configured queue.

The far-side checks run from where ``doctor`` runs: in Kubernetes, run it in the
operator pod (docs/deploy.md), which reaches what the components reach. Each check
prints ``ok`` or ``FAIL`` with what to fix; the exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.local.admin import print_json
from ccbridge.services.local.console import paint, styled
from ccbridge.services.local.settings_check import COMPONENTS, check_settings
from ccbridge.services.runtime.channels import create_blocking_channel
from ccbridge.services.runtime.http_client import HttpClient, HttpFailure
from ccbridge.services.runtime.mesh_tls import MeshTls
from ccbridge.services.runtime.ports import ADDR_ENV, peer_addr
from ccbridge.services.runtime.settings import EnvReader, SettingsError, read_mesh_tls

CHECKS = ("settings", "redis", "mesh", "infobip", "subscription", "connector")
# The gRPC services an operator calls (docs/security.md: the operator pod reaches these).
OPERATOR_PEERS = ("session", "routing", "connector")
EVENTS_PATH = "/webhooks/infobip/events"


@dataclass(frozen=True)
class Result:
    """One check's verdict: ``detail`` says what was found, ``fix`` what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class Failed(Exception):
    """A check failed: ``detail`` and ``fix``."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


def _operator_tls(environ: Mapping[str, str]) -> MeshTls:
    env = EnvReader(environ)
    tls = read_mesh_tls(env)
    if env.errors:
        raise Failed(
            "; ".join(env.errors),
            "set CCBRIDGE_TLS_CERT/_KEY/_CA to the operator's certificate (docs/security.md; "
            "`ccbridge up` prints them)",
        )
    return tls


def check_settings_of_all(environ: Mapping[str, str], components: Sequence[str]) -> str:
    report = check_settings(lambda _name: environ, components)
    if not report.ok:
        raise Failed(
            f"{len(report.problems)} problem(s):\n"
            + "\n".join(f"- {line}" for line in report.lines()),
            "set or correct each setting named above (README, Settings)",
        )
    if tuple(components) == COMPONENTS:
        return "every component's settings are valid"
    return f"the settings of {', '.join(components)} are valid"


def check_redis(environ: Mapping[str, str], timeout_s: float) -> str:
    from ccbridge.services.runtime.redis import create_redis

    url = environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    shown = url.split("@")[-1]

    async def ping() -> None:
        client = create_redis(url, max_connections=2)
        try:
            await asyncio.wait_for(client.ping(), timeout_s)
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except Exception as exc:  # every way a PING can fail is the one verdict: unreachable
        raise Failed(
            f"{shown}: {type(exc).__name__}: {str(exc)[:200]}",
            "start Redis or set REDIS_URL (with the user's password when Redis has ACLs)",
        ) from None
    return f"{shown} answers PING"


def check_mesh(environ: Mapping[str, str], timeout_s: float) -> str:
    tls = _operator_tls(environ)
    answered, problems = [], []
    for name in OPERATOR_PEERS:
        addr = peer_addr(name, environ)
        try:
            with create_blocking_channel(addr, tls, name) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
                )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                answered.append(f"{name} {addr}")
            else:
                problems.append(f"{name} at {addr} is not serving (draining, or Redis is down)")
        except grpc.RpcError as exc:
            problems.append(f"{name} at {addr}: {exc.code().name}: {exc.details()}")
    if problems:
        raise Failed(
            "; ".join(problems),
            "start the components (`ccbridge up`, or check the pods); set "
            + "/".join(ADDR_ENV[name] for name in OPERATOR_PEERS)
            + " or the CCBRIDGE_*_PORT settings when they listen elsewhere",
        )
    return "serving: " + ", ".join(answered)


def _infobip_settings(environ: Mapping[str, str]) -> Any:
    from ccbridge.services.infobip.cli import InfobipCliSettings

    try:
        return InfobipCliSettings.from_env(environ)
    except SettingsError as exc:
        raise Failed(
            str(exc), "set INFOBIP_BASE_URL and INFOBIP_API_KEY (README, Settings)"
        ) from None


async def _with_infobip(
    environ: Mapping[str, str], timeout_s: float, call: Callable[[Any], Awaitable[str]]
) -> str:
    from ccbridge.services.infobip.client import InfobipClient

    settings = _infobip_settings(environ)
    async with InfobipClient(
        settings.base_url, settings.api_key, timeout_s=timeout_s, max_retries=0
    ) as client:
        return await call(client)


def check_infobip(environ: Mapping[str, str], timeout_s: float) -> str:
    from ccbridge.services.infobip.client import InfobipError

    async def call(client: Any) -> str:
        try:
            await client.list_conversations(limit=1)
        except InfobipError as exc:
            if exc.status in (401, 403):
                raise Failed(
                    f"Infobip refused the API key (HTTP {exc.status}: {exc.text or exc})",
                    "set INFOBIP_API_KEY to a key of this account with the Conversations "
                    "scopes, and INFOBIP_BASE_URL to the account's base URL",
                ) from None
            raise Failed(
                f"Get Conversations failed: {exc}",
                "check INFOBIP_BASE_URL (your account's base URL, e.g. "
                "https://xxxxx.api.infobip.com) and that this host reaches it",
            ) from None
        return "the API key is accepted (Get Conversations)"

    base = _infobip_settings(environ).base_url
    return asyncio.run(_with_infobip(environ, timeout_s, call)) + f" at {base}"


def check_subscription(environ: Mapping[str, str], timeout_s: float, subscription_id: str) -> str:
    from ccbridge.services.infobip.client import (
        DEFAULT_SUBSCRIPTION_EVENTS,
        InfobipError,
        InfobipNotFound,
    )

    public = (environ.get("CCBRIDGE_PUBLIC_URL") or "").rstrip("/")
    wanted_url = f"{public}{EVENTS_PATH}" if public else f"https://<gateway>{EVENTS_PATH}"
    subscribe = f"ccbridge infobip subscribe --url {wanted_url} --subscription-id {subscription_id}"

    async def call(client: Any) -> str:
        try:
            subscription = await client.get_subscription(subscription_id)
            profile_id = str((subscription.get("profile") or {}).get("profileId") or "")
            profile = await client.get_profile(profile_id) if profile_id else {}
        except InfobipNotFound:
            raise Failed(
                f"Infobip has no subscription {subscription_id!r}: no event reaches the gateway "
                "(unless the deprecated account webhook is configured)",
                subscribe,
            ) from None
        except InfobipError as exc:
            raise Failed(
                f"reading the subscription failed: {exc}", "fix the infobip check first"
            ) from None
        events = {str(e) for e in subscription.get("events") or []}
        missing = [e for e in DEFAULT_SUBSCRIPTION_EVENTS if e not in events]
        webhook = profile.get("webhook") if isinstance(profile, Mapping) else None
        url = str(webhook.get("notifyUrl") or "") if isinstance(webhook, Mapping) else ""
        problems = []
        if missing:
            problems.append("it lacks the events " + ", ".join(missing))
        if not urlsplit(url).path.endswith(EVENTS_PATH):
            problems.append(f"it sends to {url or 'no URL'}, not to the gateway's {EVENTS_PATH}")
        elif public and url != f"{public}{EVENTS_PATH}":
            problems.append(
                f"it sends to {url}, not to CCBRIDGE_PUBLIC_URL's {public}{EVENTS_PATH}"
            )
        if problems:
            raise Failed(f"subscription {subscription_id}: " + "; ".join(problems), subscribe)
        return f"subscription {subscription_id} sends {len(events)} event types to {url}"

    return asyncio.run(_with_infobip(environ, timeout_s, call))


async def _far_side(name: str, settings: Any, timeout_s: float) -> str:
    """One connector's far side, from its settings (services/connector/adapters/*)."""
    if name == "webhook":
        url = settings.url
        async with HttpClient(timeout_s=timeout_s, max_answer_bytes=1 << 16) as http:
            try:
                answer = await http.request("GET", url)
            except HttpFailure as exc:
                raise Failed(
                    f"webhook: {url} cannot be reached: {exc}",
                    "check CCBRIDGE_WEBHOOK_CONNECTOR_URL and that the CCaaS endpoint is up",
                ) from None
        if answer.status >= 500:
            raise Failed(
                f"webhook: {url} answers HTTP {answer.status}",
                "the CCaaS endpoint is failing: look at its side",
            )
        return f"webhook {url} answers (HTTP {answer.status} to a GET)"
    if name == "rt":
        return await _rt_far_side(settings, timeout_s)
    return f"{name}: no far-side check"


async def _rt_far_side(settings: Any, timeout_s: float) -> str:
    """RT accepts the token (REST2 ``GET /queues/all``, the queues its user may see) and
    the configured queue is among them."""
    names: set[str] = set()
    async with HttpClient(
        base_url=f"{settings.url}/REST/2.0",
        headers={"Authorization": f"token {settings.token.value}", "Accept": "application/json"},
        timeout_s=timeout_s,
        max_answer_bytes=1 << 20,
    ) as http:
        page, pages = 1, 1
        while page <= min(pages, 20):
            try:
                answer = await http.request(
                    "GET", "/queues/all", params={"fields": "Name", "per_page": 100, "page": page}
                )
            except HttpFailure as exc:
                raise Failed(
                    f"rt: {settings.url} cannot be reached: {exc}", "check CCBRIDGE_RT_URL"
                ) from None
            if answer.status in (401, 403):
                raise Failed(
                    f"rt: RT refused the token (HTTP {answer.status})",
                    "set CCBRIDGE_RT_TOKEN to an auth token of CCBRIDGE_RT_USER "
                    "(docs/connectors/rt.md)",
                )
            if not answer.ok:
                raise Failed(
                    f"rt: GET /queues/all answered HTTP {answer.status}",
                    "check CCBRIDGE_RT_URL (RT's base URL, e.g. http://127.0.0.1:8080/rt)",
                )
            try:
                body = answer.json()
            except ValueError:
                raise Failed(
                    "rt: GET /queues/all answered without JSON",
                    "check CCBRIDGE_RT_URL (RT's base URL, e.g. http://127.0.0.1:8080/rt)",
                ) from None
            body = body if isinstance(body, dict) else {}
            items = body.get("items")
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and item.get("Name"):
                    names.add(str(item["Name"]))
            total = body.get("pages")
            pages = total if isinstance(total, int) else 1
            page += 1
    if settings.queue not in names:
        raise Failed(
            f"rt: the token is accepted, but its user ({settings.user}) sees no queue "
            f"{settings.queue!r}",
            "create the queue, grant the user SeeQueue/CreateTicket/ReplyToTicket on it, or "
            "set CCBRIDGE_RT_QUEUE",
        )
    return f"rt {settings.url} accepts the token; queue {settings.queue!r} is visible"


def check_connector(environ: Mapping[str, str], timeout_s: float) -> str:
    from ccbridge.services.connector.settings import ConnectorSettings

    tls = _operator_tls(environ)
    addr = peer_addr("connector", environ)
    running: list[str] | None = None
    note = ""
    try:
        with create_blocking_channel(addr, tls, "connector") as channel:
            listed = connector_pb2_grpc.ConnectorServiceStub(channel).ListConnectors(
                connector_pb2.ListConnectorsRequest(), timeout=timeout_s
            )
        running = [c.name for c in listed.connectors]
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
            raise Failed(
                f"ListConnectors at {addr}: {exc.code().name}: {exc.details()}",
                "start the connector service, or set CONNECTOR_ADDR / CCBRIDGE_CONNECTOR_PORT",
            ) from None
        # A component's own certificate (doctor run inside its pod) may not list them:
        # the far sides of this environment's CCBRIDGE_CONNECTORS are checked instead.
        note = "ListConnectors is for the operator identity; "
    try:
        settings = ConnectorSettings.from_env(environ)
    except SettingsError as exc:
        raise Failed(
            f"connector {addr} runs {', '.join(running or ['?'])}; "
            f"its far side cannot be checked from here: {exc}",
            "set the connector's settings in this environment (as the connector has them)",
        ) from None
    names = running if running is not None else list(settings.adapters)
    unknown = [name for name in names if name not in settings.adapters]
    if unknown:
        raise Failed(
            f"the connector runs {', '.join(unknown)}, "
            "which CCBRIDGE_CONNECTORS here does not name",
            "run doctor with the connector's settings",
        )

    async def probe() -> list[str]:
        return [await _far_side(name, settings.adapters[name], timeout_s) for name in names]

    found = asyncio.run(probe())
    if running is None:
        return note + "this environment's connectors: " + "; ".join(found)
    return f"{addr} runs {', '.join(running)}; " + "; ".join(found)


def run_checks(args: argparse.Namespace, environ: Mapping[str, str]) -> list[Result]:
    timeout_s: float = args.timeout
    steps: dict[str, Callable[[], str]] = {
        "settings": lambda: check_settings_of_all(environ, args.components or COMPONENTS),
        "redis": lambda: check_redis(environ, timeout_s),
        "mesh": lambda: check_mesh(environ, timeout_s),
        "infobip": lambda: check_infobip(environ, timeout_s),
        "subscription": lambda: check_subscription(environ, timeout_s, args.subscription_id),
        "connector": lambda: check_connector(environ, timeout_s),
    }
    results = []
    for name in CHECKS:
        if name in args.skip:
            continue
        try:
            results.append(Result(name, True, steps[name]()))
        except Failed as exc:
            results.append(Result(name, False, exc.detail, exc.fix))
    return results


def doctor_command(args: argparse.Namespace) -> int:
    results = run_checks(args, os.environ)
    if args.json:
        print_json(
            [{"check": r.name, "ok": r.ok, "detail": r.detail, "fix": r.fix} for r in results]
        )
    else:
        on = styled(sys.stdout)
        for r in results:
            mark = paint("ok  ", "green", on) if r.ok else paint("FAIL", "red", on)
            lines = r.detail.splitlines() or [""]
            print(f"{mark}  {r.name:<12}  {lines[0]}")
            for line in lines[1:]:
                print(f"{'':<4}  {'':<12}  {line}")
            if r.fix:
                print(f"{'':<4}  {'':<12}  fix: {r.fix}")
        failed = [r.name for r in results if not r.ok]
        print(
            f"\n{len(results) - len(failed)} ok, {len(failed)} failed"
            + (f": {', '.join(failed)}" if failed else "")
        )
    return 1 if any(not r.ok for r in results) else 0


def add_doctor_command(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check settings, Redis, the mesh, Infobip, the subscription and the connector",
        description="Checks this installation from the environment it runs in and says what to "
        "fix; exit code 1 when a check fails.",
    )
    doctor.add_argument(
        "--skip", action="append", default=[], choices=CHECKS, help="skip a check (repeatable)"
    )
    doctor.add_argument(
        "--component",
        dest="components",
        action="append",
        choices=COMPONENTS,
        help="check only this component's settings (repeatable; default: all five), e.g. "
        "inside one component's pod, which has only its own",
    )
    doctor.add_argument(
        "--subscription-id", default="ccbridge", help="the Infobip subscription (ccbridge)"
    )
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds per network call (5)")
    doctor.add_argument("--json", action="store_true", help="JSON for machines")
    doctor.set_defaults(func=doctor_command)
