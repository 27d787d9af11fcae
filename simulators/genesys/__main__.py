"""Runs the Genesys Cloud simulator: ``python -m ccbridge.simulators.genesys --port 8082
--bridge-url http://127.0.0.1:8000/webhooks/ccaas/genesys``.

Its settings are the connector's (so one environment configures both):
CCBRIDGE_GENESYS_CLIENT_ID, CCBRIDGE_GENESYS_CLIENT_SECRET, CCBRIDGE_GENESYS_INTEGRATION_ID
and CCBRIDGE_GENESYS_WEBHOOK_SECRET (the first of a comma-separated list signs). Point the
connector's CCBRIDGE_GENESYS_BASE_URL at ``http://<host>:<port>``; open ``/_sim/ui`` to
see the agent's view.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from ccbridge.simulators.genesys.app import create_app
from ccbridge.simulators.genesys.state import GenesysState

REQUIRED = (
    "CCBRIDGE_GENESYS_CLIENT_ID",
    "CCBRIDGE_GENESYS_CLIENT_SECRET",
    "CCBRIDGE_GENESYS_INTEGRATION_ID",
    "CCBRIDGE_GENESYS_WEBHOOK_SECRET",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ccbridge.simulators.genesys",
        description="Genesys Cloud (Open Messaging) simulator for the genesys connector",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--bridge-url", default=None, help="the bridge's webhook URL")
    parser.add_argument(
        "--token-ttl", type=int, default=86400, help="access token lifetime, seconds"
    )
    args = parser.parse_args(argv)
    missing = [key for key in REQUIRED if not os.environ.get(key)]
    if missing:
        print(f"genesys simulator: set {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s genesys-sim %(message)s"
    )
    state = GenesysState(
        integration_id=os.environ["CCBRIDGE_GENESYS_INTEGRATION_ID"],
        client_id=os.environ["CCBRIDGE_GENESYS_CLIENT_ID"],
        client_secret=os.environ["CCBRIDGE_GENESYS_CLIENT_SECRET"],
        token_ttl_s=args.token_ttl,
    )
    secret = os.environ["CCBRIDGE_GENESYS_WEBHOOK_SECRET"].split(",")[0].strip()
    app = create_app(state, webhook_secret=secret, bridge_webhook_url=args.bridge_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
