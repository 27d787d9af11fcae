"""The operator's admin commands: ``ccbridge handovers …``, ``dead-letters …``, ``erase``.

Each one calls the Session service over gRPC with the operator's mesh certificate
(``CCBRIDGE_TLS_CERT``/``_KEY``/``_CA``, docs/security.md) at the address ``ccbridge up``
gives it (``SESSION_ADDR``, else ``CCBRIDGE_SESSION_PORT`` on loopback; ``--session``
wins). Output is a table for people, or JSON with ``--json``; errors go to stderr as
``error: <gRPC code>: <details>`` with exit code 1 (2: bad settings or arguments).
Message texts are never printed: a dead letter shows its reason, not its content.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
import orjson
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ccbridge.services.local.console import Progress, age, fields, table
from ccbridge.services.runtime.channels import create_blocking_channel
from ccbridge.services.runtime.ports import peer_addr
from ccbridge.services.runtime.settings import EnvReader, read_mesh_tls
from ccbridge.session.v1 import session_pb2, session_pb2_grpc

T = TypeVar("T")
TIMEOUT_S = 10.0
# Every state, in the order an operator reads them: what needs attention first.
STATES = {
    name.removeprefix("HANDOVER_STATE_"): value
    for name, value in session_pb2.HandoverState.items()
    if value
}
LIST_ORDER = ("FAILED", "OPENING", "ACTIVE", "CLOSING", "REJECTED", "CLOSED")
_STATE_COLOURS = {"FAILED": "red", "REJECTED": "yellow", "ACTIVE": "green", "CLOSED": "dim"}
_QUEUES = {"inbox": "inbox (to the CCaaS)", "outbox": "outbox (to Infobip)"}


class CommandFailed(Exception):
    """A call failed; the message says what (printed to stderr, exit 1)."""


def session_stub(
    args: argparse.Namespace,
) -> tuple[grpc.Channel, session_pb2_grpc.SessionServiceStub]:
    """A channel to Session with the operator's certificate; raises SettingsError when
    the mesh TLS settings are missing or invalid."""
    env = EnvReader(os.environ)
    tls = read_mesh_tls(env)
    env.done("operator")
    addr = args.session or peer_addr("session", os.environ)
    channel = create_blocking_channel(addr, tls, "session")
    return channel, session_pb2_grpc.SessionServiceStub(channel)


def _call(what: Callable[[], T]) -> T:
    try:
        return what()
    except grpc.RpcError as exc:
        raise CommandFailed(f"{exc.code().name}: {exc.details()}") from None


def _dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: object) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _ts(message: Any, name: str) -> float | None:
    return float(getattr(message, name).ToMilliseconds()) / 1000 if message.HasField(name) else None


def _since(at: float | None, now: float) -> str:
    return age(now - at) if at is not None else "-"


def _state(value: session_pb2.HandoverState.ValueType) -> str:
    return session_pb2.HandoverState.Name(value).removeprefix("HANDOVER_STATE_")


def handover_rows(handovers: Sequence[session_pb2.Handover], now: float) -> list[list[str]]:
    return [
        [
            h.conversation_id,
            _state(h.state),
            _since(_ts(h, "created_at"), now),
            _since(_ts(h, "updated_at"), now),
            h.connector or "-",
            h.external_id or "-",
            str(h.inbox_pending),
            str(h.outbox_pending),
            str(h.dead_letters),
            h.failure_reason or "",
        ]
        for h in handovers
    ]


HANDOVER_HEADERS = (
    "CONVERSATION",
    "STATE",
    "AGE",
    "UPDATED",
    "CONNECTOR",
    "CASE",
    "INBOX",
    "OUTBOX",
    "DEAD",
    "LAST ERROR",
)


def show_handover(handover: session_pb2.Handover, as_json: bool) -> None:
    if as_json:
        print_json(_dict(handover))
        return
    now = time.time()
    routing = handover.routing
    pairs = [
        ("conversation", handover.conversation_id),
        ("state", _state(handover.state)),
        ("connector", handover.connector or "-"),
        ("case", handover.external_id or "-"),
        ("queue", routing.queue or "-"),
        ("channel", handover.channel or "-"),
        ("created", f"{_since(_ts(handover, 'created_at'), now)} ago"),
        ("updated", f"{_since(_ts(handover, 'updated_at'), now)} ago"),
        ("inbox pending", str(handover.inbox_pending)),
        ("outbox pending", str(handover.outbox_pending)),
        ("dead letters", str(handover.dead_letters)),
        ("tags", ", ".join(handover.tags) or "-"),
    ]
    if handover.closed_by:
        pairs.append(
            (
                "closed by",
                session_pb2.CloseInitiator.Name(handover.closed_by).removeprefix(
                    "CLOSE_INITIATOR_"
                ),
            )
        )
    if handover.failure_reason:
        pairs.append(("last error", handover.failure_reason))
    fields(pairs, sys.stdout)


def _pages(fetch: Callable[[str], tuple[Sequence[T], str]], limit: int) -> tuple[list[T], bool]:
    """Items of every page, at most ``limit`` (0: all), and whether more were left."""
    found: list[T] = []
    token = ""
    while True:
        items, token = fetch(token)
        found.extend(items)
        if limit and len(found) > limit:
            return found[:limit], True
        if not token:
            return found, False
        if limit and len(found) == limit:
            return found, True


def list_handovers(stub: session_pb2_grpc.SessionServiceStub, args: argparse.Namespace) -> None:
    states = [args.state.upper()] if args.state else list(LIST_ORDER)
    found: list[session_pb2.Handover] = []
    more = False
    for state in states:
        remaining = args.limit - len(found) if args.limit else 0
        if args.limit and remaining <= 0:
            more = True
            break

        def fetch(token: str, state: str = state) -> tuple[Sequence[session_pb2.Handover], str]:
            page = _call(
                lambda: stub.ListHandovers(
                    session_pb2.ListHandoversRequest(
                        state=STATES[state], page_size=500, page_token=token
                    ),
                    timeout=TIMEOUT_S,
                )
            )
            return page.handovers, page.next_page_token

        items, cut = _pages(fetch, remaining)
        found.extend(items)
        more = more or cut
    if args.json:
        print_json({"handovers": [_dict(h) for h in found], "more": more})
        return
    if not found:
        print("no handovers" + (f" in state {args.state.upper()}" if args.state else ""))
        return
    table(
        HANDOVER_HEADERS, handover_rows(found, time.time()), sys.stdout, colours={1: _STATE_COLOURS}
    )
    if more:
        print(f"… more handovers: raise --limit (now {args.limit}) or filter with --state")


def handovers_command(args: argparse.Namespace) -> int:
    channel, stub = session_stub(args)
    with channel:
        try:
            if args.action == "list":
                list_handovers(stub, args)
                return 0
            handover: session_pb2.Handover
            if args.action == "get":
                handover = _call(
                    lambda: stub.GetHandover(
                        session_pb2.GetHandoverRequest(conversation_id=args.conversation_id),
                        timeout=TIMEOUT_S,
                    )
                ).handover
            elif args.action == "close":
                handover = _call(
                    lambda: stub.CloseHandover(
                        session_pb2.CloseHandoverRequest(
                            conversation_id=args.conversation_id,
                            initiator=session_pb2.CLOSE_INITIATOR_OPERATOR,
                            reason=args.reason,
                        ),
                        timeout=TIMEOUT_S,
                    )
                ).handover
            else:
                handover = _call(
                    lambda: stub.RetryHandover(
                        session_pb2.RetryHandoverRequest(conversation_id=args.conversation_id),
                        timeout=TIMEOUT_S,
                    )
                ).handover
            show_handover(handover, args.json)
        except CommandFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


DEAD_LETTER_HEADERS = ("ID", "CONVERSATION", "QUEUE", "ATTEMPTS", "AGE", "REASON")


def _all_dead_letters(
    stub: session_pb2_grpc.SessionServiceStub, conversation_id: str, limit: int
) -> tuple[list[session_pb2.DeadLetter], bool]:
    def fetch(token: str) -> tuple[Sequence[session_pb2.DeadLetter], str]:
        page = _call(
            lambda: stub.ListDeadLetters(
                session_pb2.ListDeadLettersRequest(
                    conversation_id=conversation_id, page_size=500, page_token=token
                ),
                timeout=TIMEOUT_S,
            )
        )
        return page.dead_letters, page.next_page_token

    return _pages(fetch, limit)


def _letter_dict(letter: session_pb2.DeadLetter) -> dict[str, Any]:
    """A dead letter without its message's content (ids and kinds only)."""
    doc = _dict(letter)
    message = doc.pop("message", {})
    doc["message"] = {k: v for k, v in message.items() if k in ("id", "direction", "content_type")}
    return doc


def list_dead_letters(stub: session_pb2_grpc.SessionServiceStub, args: argparse.Namespace) -> None:
    letters, more = _all_dead_letters(stub, args.conversation_id or "", args.limit)
    if args.json:
        print_json({"dead_letters": [_letter_dict(d) for d in letters], "more": more})
        return
    if not letters:
        print("no dead letters")
        return
    now = time.time()
    rows = [
        [
            d.id,
            d.conversation_id,
            _QUEUES.get(d.queue, d.queue),
            str(d.attempts),
            _since(_ts(d, "dead_at"), now),
            d.reason,
        ]
        for d in letters
    ]
    table(DEAD_LETTER_HEADERS, rows, sys.stdout)
    if more:
        print(f"… more dead letters: raise --limit (now {args.limit})")


def replay_all(stub: session_pb2_grpc.SessionServiceStub, args: argparse.Namespace) -> int:
    """Replays every dead letter (of one conversation with --conversation-id); one
    refusal does not stop the rest. Exit 1 when any was refused."""
    letters, _ = _all_dead_letters(stub, args.conversation_id or "", 0)
    progress = Progress("replaying dead letters", len(letters))
    replayed: list[str] = []
    refused: list[dict[str, str]] = []
    for letter in letters:
        try:
            _call(
                lambda letter=letter: stub.ReplayDeadLetter(  # type: ignore[misc]
                    session_pb2.ReplayDeadLetterRequest(id=letter.id), timeout=TIMEOUT_S
                )
            )
            replayed.append(letter.id)
        except CommandFailed as exc:
            refused.append({"id": letter.id, "error": str(exc)})
        progress.step(letter.id)
    progress.end(f"replayed {len(replayed)} of {len(letters)} dead letters")
    if args.json:
        print_json({"replayed": replayed, "refused": refused})
    else:
        for item in refused:
            print(f"refused {item['id']}: {item['error']}", file=sys.stderr)
    return 1 if refused else 0


def dead_letters_command(args: argparse.Namespace) -> int:
    channel, stub = session_stub(args)
    with channel:
        try:
            if args.action == "list":
                list_dead_letters(stub, args)
                return 0
            if args.all:
                if args.id:
                    print("error: give a dead letter id or --all, not both", file=sys.stderr)
                    return 2
                return replay_all(stub, args)
            if not args.id:
                print("error: give a dead letter id, or --all", file=sys.stderr)
                return 2
            reply = _call(
                lambda: stub.ReplayDeadLetter(
                    session_pb2.ReplayDeadLetterRequest(id=args.id), timeout=TIMEOUT_S
                )
            )
            if args.json:
                print_json(_dict(reply))
            else:
                print(f"replayed {args.id} (conversation {reply.conversation_id})")
        except CommandFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def erase_command(args: argparse.Namespace) -> int:
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
    channel, stub = session_stub(args)
    with channel:
        try:
            reply = _call(lambda: stub.EraseData(request, timeout=120))
        except CommandFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print_json(_dict(reply))
    else:
        print(
            f"erased {len(reply.conversation_ids)} conversation(s) and "
            f"{reply.dead_letters} dead letter(s)"
        )
        for cid in reply.conversation_ids:
            print(f"  {cid}")
    return 0


def add_admin_commands(sub: Any) -> None:
    """``handovers``, ``dead-letters`` and ``erase`` on the ``ccbridge`` subparsers."""
    session_help = (
        "Session gRPC address (default: SESSION_ADDR, else 127.0.0.1:CCBRIDGE_SESSION_PORT, "
        "else 127.0.0.1:50051)"
    )

    def common(parser: argparse.ArgumentParser, group: bool = False) -> None:
        # On the command group and on each action: `handovers --json list` and
        # `handovers list --json` both work (an action's own default must not undo
        # the group's value, hence SUPPRESS there).
        parser.add_argument(
            "--session", default="" if group else argparse.SUPPRESS, help=session_help
        )
        parser.add_argument(
            "--json",
            action="store_true",
            default=False if group else argparse.SUPPRESS,
            help="JSON for machines",
        )

    ho = sub.add_parser("handovers", help="look up, list, close or retry handovers")
    common(ho, group=True)
    ho_sub = ho.add_subparsers(dest="action", required=True)
    lst = ho_sub.add_parser("list", help="handovers of every state (or --state)")
    lst.add_argument("--state", choices=[s.lower() for s in STATES] + list(STATES))
    lst.add_argument("--limit", type=int, default=200, help="at most this many (0: all)")
    for name, help_text in (
        ("get", "one handover"),
        ("close", "close it (the CCaaS case too)"),
        ("retry", "open a FAILED handover again"),
    ):
        action = ho_sub.add_parser(name, help=help_text)
        action.add_argument("conversation_id")
        if name == "close":
            action.add_argument("--reason", default="operator")
        common(action)
    common(lst)
    ho.set_defaults(func=handovers_command)

    dl = sub.add_parser("dead-letters", help="list or replay dead letters")
    common(dl, group=True)
    dl_sub = dl.add_subparsers(dest="action", required=True)
    dl_list = dl_sub.add_parser("list", help="dead letters (reason, never the message text)")
    dl_list.add_argument("--conversation-id")
    dl_list.add_argument("--limit", type=int, default=200, help="at most this many (0: all)")
    common(dl_list)
    dl_replay = dl_sub.add_parser("replay", help="deliver a dead letter again (or --all)")
    dl_replay.add_argument("id", nargs="?", default="")
    dl_replay.add_argument("--all", action="store_true", help="every dead letter")
    dl_replay.add_argument(
        "--conversation-id", help="with --all: only this conversation's dead letters"
    )
    common(dl_replay)
    dl.set_defaults(func=dead_letters_command)

    erase = sub.add_parser(
        "erase",
        help="erase everything stored about a conversation or an end user (data protection)",
    )
    erase.add_argument("subject", choices=("conversation", "end-user"))
    erase.add_argument("value", help="the conversation id, or the end user's address")
    erase.add_argument("--yes", action="store_true", help="really erase")
    common(erase, group=True)
    erase.set_defaults(func=erase_command)
