"""``ccbridge zendesk setup``: makes a Sunshine Conversations app ready for the
``zendesk`` connector, idempotently (docs/connectors/zendesk.md, "Setup").

1. The bridge's custom integration (``CCBRIDGE_ZENDESK_INTEGRATION_NAME``) with one
   webhook to the gateway's ``/webhooks/ccaas/zendesk`` and the triggers the connector
   reads: found (its triggers completed when some are missing) or created. A created
   webhook's secret is printed once (Sunshine generates it): store it as
   ``CCBRIDGE_ZENDESK_WEBHOOK_SECRET``; for a found one, the configured secret is
   checked against it.
2. The switchboard: it must exist and hold the agent workspace's switchboard
   integration (``CCBRIDGE_ZENDESK_AGENT_INTEGRATION``); the bot integration
   (``CCBRIDGE_ZENDESK_BOT_INTEGRATION``) is created for the bridge's integration when
   missing, and its ``deliverStandbyEvents`` turned on (the bridge must hear the agents'
   messages while they are in control).

It prints one JSON document saying what it found, created or changed; exit 1 when the
app cannot work (no switchboard, no agent workspace integration), 2 on bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson

from ccbridge.services.connector.adapters.zendesk_settings import ZendeskSettings
from ccbridge.services.runtime.http_client import HttpClient, HttpFailure

TRIGGERS = (
    "conversation:message",
    "conversation:typing",
    "switchboard:passControl",
    "switchboard:releaseControl",
)


class SetupError(Exception):
    """The app cannot be made ready (the message says what to do)."""


class _Api:
    def __init__(self, settings: ZendeskSettings) -> None:
        basic = base64.b64encode(f"{settings.key_id}:{settings.key_secret.value}".encode())
        self.http = HttpClient(
            base_url=settings.api,
            headers={"Authorization": f"Basic {basic.decode()}", "Accept": "application/json"},
            timeout_s=settings.timeout_s,
            max_answer_bytes=4 * 1024 * 1024,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            answer = await self.http.request(method, path, json_body=json_body, params=params)
        except HttpFailure as exc:
            raise SetupError(f"{method} {path}: {exc}") from None
        if not answer.ok:
            detail = ""
            try:
                found = answer.json()
                detail = str(found.get("errors", "")) if isinstance(found, dict) else ""
            except ValueError:
                pass
            raise SetupError(f"{method} {path}: HTTP {answer.status} {detail}".strip())
        doc = answer.json() if answer.body.strip() else {}
        return doc if isinstance(doc, dict) else {}


async def setup(
    settings: ZendeskSettings, target: str, *, show_secret: bool = False
) -> dict[str, Any]:
    """Does the setup; returns the report (see the module doc)."""
    api = _Api(settings)
    report: dict[str, Any] = {"app": settings.app_id, "target": target, "actions": []}
    actions: list[str] = report["actions"]
    try:
        listed = await api.call("GET", "/integrations", params={"filter[types]": "custom"})
        integration = next(
            (
                i
                for i in listed.get("integrations") or []
                if isinstance(i, dict) and i.get("displayName") == settings.integration_name
            ),
            None,
        )
        secret = ""
        if integration is None:
            created = await api.call(
                "POST",
                "/integrations",
                json_body={
                    "type": "custom",
                    "displayName": settings.integration_name,
                    "webhooks": [{"target": target, "triggers": list(TRIGGERS)}],
                },
            )
            integration = created.get("integration") or {}
            hook = (integration.get("webhooks") or [{}])[0]
            secret = str(hook.get("secret") or "")
            actions.append(f"created custom integration {integration.get('id')} with its webhook")
        else:
            hooks = await api.call("GET", f"/integrations/{integration['id']}/webhooks")
            hook = next((h for h in hooks.get("webhooks") or [] if h.get("target") == target), None)
            if hook is None:
                made = await api.call(
                    "POST",
                    f"/integrations/{integration['id']}/webhooks",
                    json_body={"target": target, "triggers": list(TRIGGERS)},
                )
                hook = made.get("webhook") or {}
                secret = str(hook.get("secret") or "")
                actions.append(
                    f"created webhook {hook.get('id')} on integration {integration['id']}"
                )
            else:
                missing = [t for t in TRIGGERS if t not in (hook.get("triggers") or [])]
                if missing:
                    await api.call(
                        "PATCH",
                        f"/integrations/{integration['id']}/webhooks/{hook['id']}",
                        json_body={"triggers": [*(hook.get("triggers") or []), *missing]},
                    )
                    actions.append(f"added triggers {', '.join(missing)} to webhook {hook['id']}")
                else:
                    actions.append(f"found webhook {hook['id']} (triggers complete)")
                configured = [s.value.encode() for s in settings.webhook_secrets]
                current = str(hook.get("secret") or "").encode()
                if configured:
                    matches = False
                    for value in configured:
                        matches |= hmac.compare_digest(value, current)
                    report["webhookSecretMatches"] = matches
                if show_secret:
                    secret = current.decode()
        report["integrationId"] = integration.get("id")
        report["webhookId"] = hook.get("id") if isinstance(hook, dict) else None
        if secret:
            report["webhookSecret"] = secret
            report["note"] = (
                "store webhookSecret as CCBRIDGE_ZENDESK_WEBHOOK_SECRET (connector); "
                "Sunshine shows it again only through the webhook API"
            )
        # -- the switchboard ----------------------------------------------------------
        boards = (await api.call("GET", "/switchboards")).get("switchboards") or []
        if not boards:
            raise SetupError(
                "the app has no switchboard: turn on Agent Workspace messaging in Zendesk "
                "Admin Center, which creates it"
            )
        board = boards[0]
        report["switchboardId"] = board.get("id")
        if not board.get("enabled"):
            report["warning"] = "the switchboard is disabled: every integration gets every event"
        members = (
            await api.call("GET", f"/switchboards/{board['id']}/switchboardIntegrations")
        ).get("switchboardIntegrations") or []
        by_name = {m.get("name"): m for m in members if isinstance(m, dict)}
        agent = by_name.get(settings.agent_integration)
        if agent is None:
            raise SetupError(
                f"the switchboard has no integration named {settings.agent_integration!r} "
                f"(it has: {', '.join(sorted(map(str, by_name))) or 'none'}); set "
                "CCBRIDGE_ZENDESK_AGENT_INTEGRATION to the agent workspace's name"
            )
        report["agentIntegration"] = {
            "name": agent.get("name"),
            "messageHistoryCount": agent.get("messageHistoryCount"),
        }
        bot = by_name.get(settings.bot_integration)
        if bot is None:
            made_bot = await api.call(
                "POST",
                f"/switchboards/{board['id']}/switchboardIntegrations",
                json_body={
                    "name": settings.bot_integration,
                    "integrationId": integration.get("id"),
                    "deliverStandbyEvents": True,
                    "nextSwitchboardIntegrationId": agent.get("id"),
                },
            )
            bot = made_bot.get("switchboardIntegration") or {}
            actions.append(f"created switchboard integration {settings.bot_integration!r}")
        else:
            if bot.get("integrationId") != integration.get("id"):
                report["warning"] = (
                    f"switchboard integration {settings.bot_integration!r} belongs to another "
                    "integration: the bridge gets the agents' messages only while that one "
                    "delivers standby events to it"
                )
            if not bot.get("deliverStandbyEvents") and bot.get("integrationId") == integration.get(
                "id"
            ):
                await api.call(
                    "PATCH",
                    f"/switchboards/{board['id']}/switchboardIntegrations/{bot['id']}",
                    json_body={"deliverStandbyEvents": True},
                )
                actions.append(f"turned on deliverStandbyEvents of {settings.bot_integration!r}")
            else:
                actions.append(f"found switchboard integration {settings.bot_integration!r}")
        report["botIntegration"] = {"name": bot.get("name"), "id": bot.get("id")}
        return report
    finally:
        await api.http.aclose()


def _run(args: argparse.Namespace) -> int:
    settings = ZendeskSettings.from_env(os.environ, need_webhook_secret=False)
    try:
        report = asyncio.run(setup(settings, args.target, show_secret=args.show_secret))
    except SetupError as exc:
        print(f"ccbridge zendesk: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


def add_zendesk_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Adds ``zendesk setup`` with ``add_parser`` (a subparsers object's ``add_parser``)."""
    zendesk = add_parser(
        "zendesk",
        help="make a Sunshine Conversations app ready for the zendesk connector",
        description="Reads CCBRIDGE_ZENDESK_* (base URL, app id, key id/secret).",
    )
    commands = zendesk.add_subparsers(dest="zendesk_command", required=True)
    run = commands.add_parser(
        "setup",
        help="create or find the webhook integration and check the switchboard (idempotent)",
    )
    run.add_argument("--target", required=True, help="https://<gateway>/webhooks/ccaas/zendesk")
    run.add_argument(
        "--show-secret",
        action="store_true",
        help="also print the secret of a webhook that already exists",
    )
    run.set_defaults(func=_run)
