"""Runs the Zendesk simulator: ``python -m ccbridge.simulators.zendesk --port 8082``
(or ``ccbridge sim zendesk --port 8082``).

Point the connector at it with ``CCBRIDGE_ZENDESK_BASE_URL=http://<host>:<port>``, the
same app id, and the key id/secret (``CCBRIDGE_ZENDESK_KEY_ID`` /
``CCBRIDGE_ZENDESK_KEY_SECRET``, read from the environment: secrets never go on the
command line). Webhooks it creates get ``ZENDESK_SIM_WEBHOOK_SECRET`` as their secret
(random when unset; the real service always generates one). Open ``/_sim/ui`` to see
the agent's view and answer as an agent.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from ccbridge.simulators.zendesk.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ccbridge.simulators.zendesk",
        description="Zendesk (Sunshine Conversations v2) simulator for the zendesk connector",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument(
        "--app-id",
        default=os.environ.get("CCBRIDGE_ZENDESK_APP_ID") or "5d8cff3cd55b040010928b5b",
        help="the simulated app's id (default: $CCBRIDGE_ZENDESK_APP_ID)",
    )
    args = parser.parse_args(argv)
    key_id = os.environ.get("CCBRIDGE_ZENDESK_KEY_ID", "")
    key_secret = os.environ.get("CCBRIDGE_ZENDESK_KEY_SECRET", "")
    if not key_id or not key_secret:
        print(
            "zendesk simulator: CCBRIDGE_ZENDESK_KEY_ID and CCBRIDGE_ZENDESK_KEY_SECRET "
            "are required (the API key the bridge authenticates with)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s zendesk-sim %(message)s"
    )
    app = create_app(
        app_id=args.app_id,
        key_id=key_id,
        key_secret=key_secret,
        webhook_secret=os.environ.get("ZENDESK_SIM_WEBHOOK_SECRET") or None,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
