"""The ``ccbridge`` command.

``ccbridge serve <component>``   run one component in this process (what a pod runs)
``ccbridge up [--demo]``         run the whole mesh locally as separate processes
``ccbridge sim infobip|ccaas|genesys|zendesk``   run a simulator
``ccbridge erase conversation|end-user X --yes``   a data-protection request
``ccbridge handovers ...``       look up, list, close handovers (gRPC, for operators)
``ccbridge dead-letters ...``    list and replay dead letters
``ccbridge doctor``              check settings, Redis, the mesh, Infobip, the connector
``ccbridge infobip ...``         point an Infobip account at the gateway
``ccbridge genesys setup``       check Genesys Cloud, point its Open Messaging webhook here
``ccbridge zendesk setup``       make a Sunshine Conversations app ready for the connector
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ccbridge.services.connector.adapters.zendesk_setup import add_zendesk_commands
from ccbridge.services.connector.genesys_cli import add_genesys_commands
from ccbridge.services.infobip.cli import add_infobip_commands
from ccbridge.services.local.admin import add_admin_commands
from ccbridge.services.local.doctor import add_doctor_command
from ccbridge.services.local.settings_check import COMPONENTS
from ccbridge.services.runtime.settings import SettingsError

_MODULES = {
    "gateway": "ccbridge.gateway.__main__",
    "session": "ccbridge.services.session.__main__",
    "history": "ccbridge.services.history.__main__",
    "routing": "ccbridge.services.routing.__main__",
    "connector": "ccbridge.services.connector.__main__",
}


def _serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(_MODULES[args.component])
    module.main()
    return 0


def _sim(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"ccbridge.simulators.{args.which}.__main__")
    module.main(args.rest)
    return 0


def _up(args: argparse.Namespace) -> int:
    from ccbridge.services.local.run import run_up

    return run_up(demo=args.demo, data_dir=args.data_dir, keep_running=not args.once)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccbridge",
        description="Hands Infobip chatbot conversations to agents in any contact center.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one component (settings from the environment)")
    serve.add_argument("component", choices=COMPONENTS)
    serve.set_defaults(func=_serve)

    up = sub.add_parser("up", help="run every component locally as separate processes")
    up.add_argument(
        "--demo",
        action="store_true",
        help="also start the Infobip and CCaaS simulators and play a handover",
    )
    up.add_argument(
        "--data-dir",
        default=os.environ.get("CCBRIDGE_DATA_DIR", ".ccbridge"),
        help="where the embedded Redis keeps its AOF and logs go "
        "(default .ccbridge, or CCBRIDGE_DATA_DIR)",
    )
    up.add_argument(
        "--once",
        action="store_true",
        help="with --demo: stop after the demo instead of waiting for Ctrl-C",
    )
    up.set_defaults(func=_up)

    sim = sub.add_parser("sim", help="run a simulator (pass --help after the name)")
    sim.add_argument("which", choices=("infobip", "ccaas", "genesys", "zendesk"))
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    sim.set_defaults(func=_sim)

    add_admin_commands(sub)
    add_doctor_command(sub)
    add_infobip_commands(sub.add_parser)
    add_genesys_commands(sub.add_parser)
    add_zendesk_commands(sub.add_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except SettingsError as exc:
        print(f"ccbridge: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


if __name__ == "__main__":
    main()
