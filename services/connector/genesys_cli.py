"""``ccbridge genesys setup``: checks the Genesys Cloud side of the ``genesys`` connector
and points the Open Messaging integration's outbound webhook at the gateway.

1. Gets an access token with the OAuth client (CCBRIDGE_GENESYS_CLIENT_ID/SECRET): proves
   the client credentials and the region.
2. Reads the integration (``GET /api/v2/conversations/messaging/integrations/open/{id}``,
   the SDK's ``OpenIntegration``): proves it exists and the client may see it.
3. With ``--webhook-url``: when the integration's ``outboundNotificationWebhookUrl``
   differs (or with ``--force``), PATCHes it (``OpenIntegrationUpdateRequest``) with that
   URL and the first CCBRIDGE_GENESYS_WEBHOOK_SECRET as
   ``outboundNotificationWebhookSignatureSecretToken``. Idempotent: a matching integration
   is left alone (Genesys does not show the secret back, so ``--force`` re-sends it after
   a rotation).

Secrets are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import orjson

from ccbridge.services.connector.adapters.genesys import GenesysApi
from ccbridge.services.connector.adapters.genesys_settings import GenesysSettings
from ccbridge.services.runtime.errors import FarSideError

_WEBHOOK_PATH = "/webhooks/ccaas/genesys"


def _print(doc: object) -> None:
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


async def setup(settings: GenesysSettings, webhook_url: str | None, force: bool) -> int:
    """Runs the checks (and the update); returns the exit code."""
    api = GenesysApi(settings)
    path = (
        "/api/v2/conversations/messaging/integrations/open/"
        f"{quote(settings.integration_id, safe='')}"
    )
    try:
        await api.tokens.get()
        print("✓ OAuth client credentials accepted", file=sys.stderr)
        answer = await api.call("GET", path, allow=frozenset({404}))
        if answer.status == 404:
            print(
                f"✗ no Open Messaging integration {settings.integration_id!r} "
                "(CCBRIDGE_GENESYS_INTEGRATION_ID) visible to this OAuth client",
                file=sys.stderr,
            )
            return 1
        integration = orjson.loads(answer.body)
        current = integration.get("outboundNotificationWebhookUrl")
        shown = {
            "id": integration.get("id"),
            "name": integration.get("name"),
            "status": integration.get("status"),
            "outboundNotificationWebhookUrl": current,
        }
        print(f"✓ integration found ({integration.get('name')!r})", file=sys.stderr)
        if webhook_url is None:
            _print(shown)
            return 0
        if current == webhook_url and not force:
            print("✓ the outbound webhook already points at the gateway", file=sys.stderr)
            _print(shown)
            return 0
        update = {
            "outboundNotificationWebhookUrl": webhook_url,
            "outboundNotificationWebhookSignatureSecretToken": settings.webhook_secrets[0].value,
        }
        patched = await api.call("PATCH", path, body=update)
        after = orjson.loads(patched.body) if patched.body.strip() else {}
        shown["outboundNotificationWebhookUrl"] = after.get(
            "outboundNotificationWebhookUrl", webhook_url
        )
        print("✓ outbound webhook URL and secret token set", file=sys.stderr)
        _print(shown)
        return 0
    except FarSideError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    finally:
        await api.aclose()


def _setup(args: argparse.Namespace) -> int:
    settings = GenesysSettings.from_env(os.environ)
    url = args.webhook_url
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            print("ccbridge: --webhook-url must be an http(s) URL", file=sys.stderr)
            return 2
        if not parts.path.endswith(_WEBHOOK_PATH):
            print(f"ccbridge: --webhook-url must end with {_WEBHOOK_PATH}", file=sys.stderr)
            return 2
    return asyncio.run(setup(settings, url, args.force))


def add_genesys_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Adds ``genesys setup`` with ``add_parser`` (a subparsers object's ``add_parser``)."""
    genesys = add_parser(
        "genesys",
        help="check Genesys Cloud and point its Open Messaging webhook at the gateway",
        description="Genesys Cloud side of the genesys connector (reads CCBRIDGE_GENESYS_*).",
    )
    commands = genesys.add_subparsers(dest="genesys_command", required=True)
    setup_cmd = commands.add_parser(
        "setup",
        help="check the OAuth client and the integration; set the outbound webhook",
        description="Checks the OAuth client and the Open Messaging integration; with "
        "--webhook-url, makes the integration's outbound notification webhook that URL with "
        "the first CCBRIDGE_GENESYS_WEBHOOK_SECRET (idempotent).",
    )
    setup_cmd.add_argument(
        "--webhook-url", default=None, help="https://<gateway>/webhooks/ccaas/genesys"
    )
    setup_cmd.add_argument(
        "--force", action="store_true", help="send URL and secret even when the URL matches"
    )
    setup_cmd.set_defaults(func=_setup)
