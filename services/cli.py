"""The ``ccbridge`` command.

``ccbridge serve <component>``   run one component in this process (what a pod runs)
``ccbridge up [--demo]``         run the whole mesh locally as separate processes
``ccbridge sim infobip|ccaas|genesys``   run a simulator
``ccbridge erase conversation|end-user X --yes``   a data-protection request
``ccbridge handovers ...``       look up, list, close handovers (gRPC, for operators)
``ccbridge dead-letters ...``    list and replay dead letters
``ccbridge infobip ...``         point an Infobip account at the gateway
``ccbridge genesys setup``       check Genesys Cloud, point its Open Messaging webhook here
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import grpc
import orjson
from google.protobuf.json_format import MessageToDict

from ccbridge.services.connector.genesys_cli import add_genesys_commands
from ccbridge.services.infobip.cli import add_infobip_commands
from ccbridge.services.runtime.channels import create_blocking_channel
from ccbridge.services.runtime.ports import default_addr
from ccbridge.services.runtime.settings import EnvReader, SettingsError, read_mesh_tls
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

COMPONENTS = ("gateway", "session", "history", "routing", "connector")
_MODULES = {
    "gateway": "ccbridge.gateway.__main__",
    "session": "ccbridge.services.session.__main__",
    "history": "ccbridge.services.history.__main__",
    "routing": "ccbridge.services.routing.__main__",
    "connector": "ccbridge.services.connector.__main__",
}
_STATES = {
    name.removeprefix("HANDOVER_STATE_"): value
    for name, value in session_pb2.HandoverState.items()
    if value
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


def _session_stub(addr: str) -> tuple[grpc.Channel, session_pb2_grpc.SessionServiceStub]:
    # The operator's own certificate (identity "operator"): CCBRIDGE_TLS_CERT/KEY/CA.
    env = EnvReader(os.environ)
    tls = read_mesh_tls(env)
    env.done("operator")
    channel = create_blocking_channel(addr, tls, "session")
    return channel, session_pb2_grpc.SessionServiceStub(channel)


def _print(message: object) -> None:
    print(
        orjson.dumps(
            MessageToDict(message, preserving_proto_field_name=True),  # type: ignore[arg-type]
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        ).decode()
    )


def _handovers(args: argparse.Namespace) -> int:
    channel, stub = _session_stub(args.session)
    with channel:
        try:
            if args.action == "get":
                _print(
                    stub.GetHandover(
                        session_pb2.GetHandoverRequest(conversation_id=args.conversation_id),
                        timeout=10,
                    )
                )
            elif args.action == "list":
                _print(
                    stub.ListHandovers(
                        session_pb2.ListHandoversRequest(
                            state=_STATES[args.state.upper()],
                            page_size=args.limit,
                            page_token=args.page_token,
                        ),
                        timeout=10,
                    )
                )
            elif args.action == "close":
                _print(
                    stub.CloseHandover(
                        session_pb2.CloseHandoverRequest(
                            conversation_id=args.conversation_id,
                            initiator=session_pb2.CLOSE_INITIATOR_OPERATOR,
                            reason=args.reason,
                        ),
                        timeout=10,
                    )
                )
            elif args.action == "retry":
                _print(
                    stub.RetryHandover(
                        session_pb2.RetryHandoverRequest(conversation_id=args.conversation_id),
                        timeout=10,
                    )
                )
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    channel, stub = _session_stub(args.session)
    with channel:
        try:
            if args.action == "list":
                _print(
                    stub.ListDeadLetters(
                        session_pb2.ListDeadLettersRequest(
                            conversation_id=args.conversation_id or "", page_size=args.limit
                        ),
                        timeout=10,
                    )
                )
            else:
                _print(
                    stub.ReplayDeadLetter(
                        session_pb2.ReplayDeadLetterRequest(id=args.id), timeout=10
                    )
                )
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


def _erase(args: argparse.Namespace) -> int:
    if not args.yes:
        print(
            f"this erases everything ccbridge stores about {args.subject} "
            f"{args.value!r} (handovers, queues, dead letters); add --yes to do it",
            file=sys.stderr,
        )
        return 2
    request = (
        session_pb2.EraseDataRequest(conversation_id=args.value)
        if args.subject == "conversation"
        else session_pb2.EraseDataRequest(end_user=args.value)
    )
    channel, stub = _session_stub(args.session)
    with channel:
        try:
            _print(stub.EraseData(request, timeout=120))
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


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
    sim.add_argument("which", choices=("infobip", "ccaas", "genesys"))
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    sim.set_defaults(func=_sim)

    session_addr = os.environ.get("SESSION_ADDR", default_addr("session"))
    ho = sub.add_parser("handovers", help="look up, list, close or retry handovers")
    ho.add_argument("--session", default=session_addr, help="Session gRPC address")
    ho_sub = ho.add_subparsers(dest="action", required=True)
    get = ho_sub.add_parser("get")
    get.add_argument("conversation_id")
    lst = ho_sub.add_parser("list")
    lst.add_argument(
        "--state", default="ACTIVE", choices=[s.lower() for s in _STATES] + list(_STATES)
    )
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--page-token", default="")
    close = ho_sub.add_parser("close")
    close.add_argument("conversation_id")
    close.add_argument("--reason", default="operator")
    retry = ho_sub.add_parser("retry")
    retry.add_argument("conversation_id")
    ho.set_defaults(func=_handovers)

    dl = sub.add_parser("dead-letters", help="list or replay dead letters")
    dl.add_argument("--session", default=session_addr, help="Session gRPC address")
    dl_sub = dl.add_subparsers(dest="action", required=True)
    dl_list = dl_sub.add_parser("list")
    dl_list.add_argument("--conversation-id")
    dl_list.add_argument("--limit", type=int, default=50)
    dl_replay = dl_sub.add_parser("replay")
    dl_replay.add_argument("id")
    dl.set_defaults(func=_dead_letters)

    erase = sub.add_parser(
        "erase",
        help="erase everything stored about a conversation or an end user (data protection)",
    )
    erase.add_argument("--session", default=session_addr, help="Session gRPC address")
    erase.add_argument("subject", choices=("conversation", "end-user"))
    erase.add_argument("value", help="the conversation id, or the end user's address")
    erase.add_argument("--yes", action="store_true", help="really erase")
    erase.set_defaults(func=_erase)

    add_infobip_commands(sub.add_parser)
    add_genesys_commands(sub.add_parser)
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
