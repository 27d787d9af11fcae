"""Runs the Infobip simulator as a process:
``python -m ccbridge.simulators.infobip --port 9001 --api-key K --webhook-url URL``."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from ccbridge.services.infobip.webhook_auth import DEFAULT_ENCODING, DEFAULT_HEADER, ENCODINGS
from ccbridge.services.runtime.gc_tuning import freeze_periodically

try:  # the contract check needs jsonschema: the `local` extra, like the embedded Redis
    from ccbridge.simulators.infobip.app import create_app
    from ccbridge.simulators.infobip.state import InfobipSimState
except ImportError as missing:  # pragma: no cover - depends on the installed extras
    raise SystemExit(
        f"the Infobip simulator needs the local extra ({missing.name} is missing): "
        "pip install 'ccbridge[local]'"
    ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ccbridge.simulators.infobip",
        description="Infobip Conversations API simulator",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=9001, help="port (9001)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="accepted key of 'Authorization: App <key>' (default: $INFOBIP_API_KEY, else sim-key)",
    )
    parser.add_argument(
        "--webhook-url",
        default=None,
        help="legacy account webhook URL end-user messages are POSTed to (default: "
        "$INFOBIP_SIM_WEBHOOK_URL; it holds a token: prefer the variable, ps shows arguments)",
    )
    parser.add_argument(
        "--page-delay-ms", type=int, default=0, help="delay of every Get Messages page, in ms (0)"
    )
    parser.add_argument(
        "--webhook-timeout-s", type=float, default=5.0, help="timeout of each webhook POST (5)"
    )
    parser.add_argument(
        "--contract",
        default="strict",
        choices=("strict", "warn", "off"),
        help="what an answer or webhook of the simulator that violates Infobip's published "
        "schemas does: strict = answer 500 / not sent, warn = log, off = no check (strict)",
    )
    parser.add_argument(
        "--record",
        default=None,
        metavar="PATH",
        help="append every API exchange and webhook to PATH as JSON lines (tests)",
    )
    parser.add_argument(
        "--hmac-header",
        default=DEFAULT_HEADER,
        help=f"header of the HMAC signature of subscription events ({DEFAULT_HEADER}; "
        "as INFOBIP_WEBHOOK_HMAC_HEADER, unconfirmed for Infobip)",
    )
    parser.add_argument(
        "--hmac-encoding",
        default=DEFAULT_ENCODING,
        choices=ENCODINGS,
        help=f"encoding of that signature ({DEFAULT_ENCODING}; as INFOBIP_WEBHOOK_HMAC_ENCODING)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.page_delay_ms < 0:
        raise SystemExit("--page-delay-ms must be >= 0")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s infobip-sim %(name)s: %(message)s",
    )
    state = InfobipSimState(
        webhook_url=args.webhook_url or os.environ.get("INFOBIP_SIM_WEBHOOK_URL") or None,
        page_delay_ms=args.page_delay_ms,
        webhook_timeout_s=args.webhook_timeout_s,
        contract_mode=args.contract,
        record_path=args.record,
    )
    state.sender.hmac_header = args.hmac_header
    state.sender.hmac_encoding = args.hmac_encoding
    app = create_app(state, api_key=args.api_key or os.environ.get("INFOBIP_API_KEY") or "sim-key")
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
    )
    # The recorded state only grows: keep the collector from rescanning it.
    freeze_periodically()
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
