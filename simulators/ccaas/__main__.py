"""Runs the CCaaS simulator: ``python -m ccbridge.simulators.ccaas --port 8081 --secret s3cret
--bridge-url http://127.0.0.1:8000/webhooks/ccaas/webhook``.

Point ccbridge's CCBRIDGE_WEBHOOK_CONNECTOR_URL at ``http://<host>:<port>/webhook`` with the
same secret; open ``/_sim/ui`` in a browser to watch cases and answer as an agent.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from ccbridge.services.runtime.gc_tuning import freeze_periodically
from ccbridge.simulators.ccaas.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ccbridge.simulators.ccaas",
        description="CCaaS simulator for the webhook connector",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--secret",
        default=None,
        help="shared HMAC secret(s), comma-separated; default: $CCBRIDGE_WEBHOOK_CONNECTOR_SECRET",
    )
    parser.add_argument(
        "--bridge-url",
        default=None,
        help="the bridge's /webhooks/ccaas/webhook URL for agent events",
    )
    args = parser.parse_args(argv)
    secret = args.secret or os.environ.get("CCBRIDGE_WEBHOOK_CONNECTOR_SECRET", "")
    if not secret.strip(","):
        print(
            "ccaas simulator: --secret (or CCBRIDGE_WEBHOOK_CONNECTOR_SECRET) is required",
            file=sys.stderr,
        )
        raise SystemExit(2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s ccaas-sim %(message)s"
    )
    app = create_app(secret=secret, bridge_webhook_url=args.bridge_url)
    # The recorded state only grows: keep the collector from rescanning it.
    freeze_periodically()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
