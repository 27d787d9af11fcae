"""Opening hours of routing rules, judged at an injected instant (no real clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from ccbridge.common.v1 import common_pb2
from ccbridge.routing.v1 import routing_pb2
from ccbridge.services.routing.rules import OUTSIDE_HOURS, Facts, RulesError, parse_rules
from ccbridge.services.routing.servicer import RoutingServicer

RULES = """
default: {connector: webhook, queue: general}
rules:
  - name: berlin-desk
    match: {tags_any: [desk]}
    route: {queue: desk}
    hours:
      timezone: Europe/Berlin
      weekly:
        mon: "08:00-18:00"
        tue: ["08:00-12:00", "13:00-18:00"]
        sat: []
        sun: "00:00-24:00"
      holidays: [2025-12-25, "2026-01-01"]
  - name: everyone
    route: {queue: chat}
"""

DESK = Facts(tags=("desk",))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def decide(now: str, facts: Facts = DESK) -> tuple[str, str]:
    decision = parse_rules(RULES, source="r.yaml", default_connector="webhook").route(
        facts, at(now)
    )
    return decision.rule, decision.rejection


@pytest.mark.parametrize(
    ("now", "rejection"),
    [
        # Monday 2025-03-03; Berlin is UTC+1 in winter.
        ("2025-03-03T06:59:00+00:00", OUTSIDE_HOURS),  # 07:59 local
        ("2025-03-03T07:00:00+00:00", ""),  # 08:00 local: start included
        ("2025-03-03T16:59:59+00:00", ""),
        ("2025-03-03T17:00:00+00:00", OUTSIDE_HOURS),  # 18:00 local: end excluded
        # Tuesday: the lunch break.
        ("2025-03-04T11:30:00+00:00", OUTSIDE_HOURS),  # 12:30 local
        ("2025-03-04T12:00:00+00:00", ""),  # 13:00 local
        # Wednesday is not listed: closed; Saturday is an empty list: closed.
        ("2025-03-05T10:00:00+00:00", OUTSIDE_HOURS),
        ("2025-03-08T10:00:00+00:00", OUTSIDE_HOURS),
        # Sunday all day, to the last minute.
        ("2025-03-09T22:59:00+00:00", ""),  # 23:59 local
        # Summer time (UTC+2): Monday 2025-07-07 07:30 UTC is 09:30 local.
        ("2025-07-07T07:30:00+00:00", ""),
        ("2025-07-07T16:30:00+00:00", OUTSIDE_HOURS),  # 18:30 local
        # A Monday in UTC that is already Tuesday 00:30 in Berlin: Tuesday's hours.
        ("2025-03-03T23:30:00+00:00", OUTSIDE_HOURS),
        # Holidays, whole local days: 2025-12-25 is a Thursday, 2026-01-01 a Thursday too.
        ("2025-12-25T09:00:00+00:00", OUTSIDE_HOURS),
        ("2025-12-28T09:00:00+00:00", ""),  # Sunday after: open all day
        ("2025-12-31T23:30:00+00:00", OUTSIDE_HOURS),  # 00:30 local on 2026-01-01
    ],
)
def test_the_matched_rules_hours_decide(now: str, rejection: str) -> None:
    assert decide(now) == ("berlin-desk", rejection)


def test_a_date_yaml_cannot_build_is_a_rules_error_not_a_crash() -> None:
    text = (
        "rules:\n  - name: r1\n    route: {queue: q}\n"
        "    hours: {timezone: UTC, weekly: {}, holidays: [2025-13-01]}\n"
    )
    with pytest.raises(RulesError, match=r"month must be in 1\.\.12"):
        parse_rules(text, source="r.yaml", default_connector="webhook")


def test_a_rule_without_hours_is_always_open_and_hours_never_change_which_rule_matches() -> None:
    closed = "2025-03-05T10:00:00+00:00"
    assert decide(closed, Facts(tags=("other",))) == ("everyone", "")
    assert decide(closed) == ("berlin-desk", OUTSIDE_HOURS)  # not the next rule


def test_explain_says_why() -> None:
    rules = parse_rules(RULES, source="r.yaml", default_connector="webhook")
    decision, evaluations = rules.explain(DESK, at("2025-03-08T09:15:00+00:00"))
    assert decision.rejection == OUTSIDE_HOURS
    assert evaluations[0].reasons[-1] == "hours: sat 10:15 Europe/Berlin: closed"
    _, evaluations = rules.explain(DESK, at("2025-12-25T09:15:00+00:00"))
    assert evaluations[0].reasons[-1] == "hours: 2025-12-25 is a holiday in Europe/Berlin: closed"


@pytest.mark.parametrize(
    ("hours", "error"),
    [
        ("{timezone: Mars/Olympus, weekly: {}}", "unknown time zone 'Mars/Olympus'"),
        ("{weekly: {}}", "timezone must be an IANA time zone"),
        ("{timezone: UTC}", "weekly: must be a mapping of mon..sun to ranges"),
        ("{timezone: UTC, weekly: {monday: '08:00-10:00'}}", "unknown key 'monday'"),
        ("{timezone: UTC, weekly: {mon: '8-10'}}", "ranges are 'HH:MM-HH:MM', got '8-10'"),
        ("{timezone: UTC, weekly: {mon: '18:00-08:00'}}", "split a range over midnight"),
        ("{timezone: UTC, weekly: {mon: '08:00-24:30'}}", "start before end"),
        ("{timezone: UTC, weekly: {}, holidays: ['2025-13-01']}", "not a date (YYYY-MM-DD)"),
        ("{timezone: UTC, weekly: {}, holidays: 2025-12-25}", "must be a list of dates"),
        ("{timezone: UTC, weekly: {}, open: true}", "unknown key 'open'"),
        ("always", "must be a mapping with timezone, weekly, holidays"),
    ],
)
def test_bad_hours_are_reported_with_the_rule(hours: str, error: str) -> None:
    text = f"rules:\n  - name: r1\n    route: {{queue: q}}\n    hours: {hours}\n"
    with pytest.raises(RulesError) as caught:
        parse_rules(text, source="r.yaml", default_connector="webhook")
    assert any(error in e and "rule 'r1' hours" in e for e in caught.value.errors), (
        caught.value.errors
    )


class _Rules:
    def __init__(self) -> None:
        self.rules = parse_rules(RULES, source="r.yaml", default_connector="webhook")


async def test_the_service_judges_at_its_clock_and_answers_the_rejection() -> None:
    now = [at("2025-03-08T10:00:00+00:00")]
    servicer = RoutingServicer(_Rules(), clock=lambda: now[0])  # type: ignore[arg-type]
    request = routing_pb2.RouteRequest(context=common_pb2.ConversationContext(tags=["desk"]))
    context: grpc.aio.ServicerContext[routing_pb2.RouteRequest, routing_pb2.RouteResponse]
    context = None  # type: ignore[assignment]  # unused by the servicer
    closed = await servicer.Route(request, context)
    assert (closed.decision.rule, closed.decision.rejection) == ("berlin-desk", OUTSIDE_HOURS)
    now[0] = at("2025-03-09T10:00:00+00:00")
    opened = await servicer.Route(request, context)
    assert (opened.decision.queue, opened.decision.rejection) == ("desk", "")
    assert now[0].tzinfo is UTC
