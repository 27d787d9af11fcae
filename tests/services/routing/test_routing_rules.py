"""The routing rules language: matching, explanations, and strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccbridge.services.routing.rules import Facts, RulesError, RuleSet, parse_rules

ROOT = Path(__file__).resolve().parents[3]

RULES = """
default:
  connector: webhook
  queue: general
rules:
  - name: vip-whatsapp
    match:
      channel: WHATSAPP
      tags_any: [vip, gold]
    route: {queue: vip, priority: 10, skills: [vip]}
  - name: dach
    match:
      language: [de]
      metadata:
        country: [DE, AT]
        tier: 1
    route: {connector: rt, queue: dach, skills: german}
  - name: business-billing
    match:
      tags_all: [billing, escalated]
      metadata:
        email: {regex: '@example\\.com$'}
    route: {queue: billing}
  - name: catch-all-chat
    route: {queue: chat}
"""


def rules(text: str = RULES, default_connector: str = "webhook") -> RuleSet:
    return parse_rules(text, source="rules.yaml", default_connector=default_connector)


def test_first_match_wins_and_route_fields() -> None:
    decision = rules().route(
        Facts(
            channel="WHATSAPP",
            tags=("VIP",),
            language="de",
            metadata={"country": "DE", "tier": "1"},
        )
    )
    assert decision.rule == "vip-whatsapp"
    assert (
        decision.route.connector,
        decision.route.queue,
        decision.route.priority,
        decision.route.skills,
    ) == ("webhook", "vip", 10, ("vip",))


def test_channel_language_and_metadata_values() -> None:
    decision = rules().route(
        Facts(channel="sms", language="de_AT", metadata={"country": "AT", "tier": "1"})
    )
    assert decision.rule == "dach"
    assert decision.route.connector == "rt"
    assert decision.route.skills == ("german",)
    # "de" does not match "den"; a missing metadata key never matches.
    assert (
        rules().route(Facts(language="den", metadata={"country": "AT", "tier": "1"})).rule
        == "catch-all-chat"
    )
    assert rules().route(Facts(language="de", metadata={"country": "AT"})).rule == "catch-all-chat"


def test_tags_all_and_regex() -> None:
    facts = Facts(tags=("billing", "Escalated"), metadata={"email": "ann@example.com"})
    assert rules().route(facts).rule == "business-billing"
    facts = Facts(tags=("billing",), metadata={"email": "ann@example.com"})
    assert rules().route(facts).rule == "catch-all-chat"


def test_default_when_nothing_matches() -> None:
    text = RULES.replace("  - name: catch-all-chat\n    route: {queue: chat}\n", "")
    decision = rules(text).route(Facts(channel="EMAIL"))
    assert decision.rule == "default"
    assert decision.route.queue == "general"
    assert decision.route.connector == "webhook"


def test_default_connector_from_settings_when_file_has_no_default() -> None:
    ruleset = rules(
        "rules:\n  - name: a\n    match: {channel: SMS}\n    route: {queue: q}\n",
        default_connector="rt",
    )
    assert ruleset.default.connector == "rt"
    assert ruleset.route(Facts(channel="SMS")).route.connector == "rt"
    assert ruleset.route(Facts(channel="VIBER")).rule == "default"


def test_explain_stops_at_first_match_with_reasons() -> None:
    decision, evaluations = rules().explain(
        Facts(channel="SMS", tags=("billing", "escalated"), metadata={"email": "x@example.com"})
    )
    assert decision.rule == "business-billing"
    assert [(e.rule, e.matched) for e in evaluations] == [
        ("vip-whatsapp", False),
        ("dach", False),
        ("business-billing", True),
    ]
    assert evaluations[0].reasons == (
        "channel SMS in [WHATSAPP]: no",
        "tags_any [vip, gold] in tags [billing, escalated]: no",
    )
    assert "metadata.country is missing: no" in evaluations[1].reasons
    assert "language (none) in [de]: no" in evaluations[1].reasons
    assert "metadata.email 'x@example.com' matches /@example\\.com$/: yes" in evaluations[2].reasons


def test_explain_catch_all_reason() -> None:
    _, evaluations = rules().explain(Facts(channel="EMAIL"))
    assert evaluations[-1].rule == "catch-all-chat"
    assert evaluations[-1].reasons == ("no conditions: matches every conversation",)


def test_unknown_keys_and_bad_values_are_reported_with_rule_and_line() -> None:
    text = (
        "default: {connector: webhook, qeue: x}\n"  # line 1
        "rules:\n"
        "  - name: first\n"  # line 3
        "    mtach: {channel: SMS}\n"
        "    route: {queue: a}\n"
        "  - name: second\n"  # line 6
        "    match:\n"
        "      channel: []\n"  # line 8
        "      metadata: {k: {regex: '('}, v: {rgx: a}}\n"
        "    route: {priority: high}\n"  # line 10
        "  - name: first\n"  # line 11
        "    route: {}\n"
        "extra: 1\n"
    )
    with pytest.raises(RulesError) as info:
        rules(text)
    errors = info.value.errors
    assert (
        "rules.yaml:1: default: unknown key 'qeue' (allowed: connector, queue, priority, "
        "skills)" in errors
    )
    assert (
        "rules.yaml:3: rule 'first': unknown key 'mtach' (allowed: name, match, route, hours)"
        in errors
    )
    assert any(
        e.startswith("rules.yaml:8: rule 'second' match.channel: must not be empty") for e in errors
    )
    assert any("rule 'second' match.metadata.k: invalid regex" in e for e in errors)
    assert any("rule 'second' match.metadata.v: unknown key 'rgx'" in e for e in errors)
    assert "rules.yaml:10: rule 'second' route: priority must be an integer, got 'high'" in errors
    assert "rules.yaml:11: rule 'first': duplicate name (first at line 3)" in errors
    assert any("file: unknown key 'extra'" in e for e in errors)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "file is empty"),
        ("rules: [\n", "YAML error"),
        ("- a\n", "must be a mapping"),
        ("rules:\n  - name: a\n    match: {channel: SMS}\n", "route is required"),
        ("rules:\n  - match: {}\n    route: {}\n", "name must be a non-empty string"),
        ("rules:\n  - {name: a, route: {}, route: {}}\n", "duplicate key 'route'"),
        ("rules:\n  - {name: default, route: {}}\n", "reserved"),
    ],
)
def test_invalid_documents(text: str, fragment: str) -> None:
    with pytest.raises(RulesError) as info:
        rules(text)
    assert fragment in str(info.value)


def test_example_file_is_valid() -> None:
    ruleset = parse_rules(
        (ROOT / "examples" / "routing.yaml").read_text(),
        source="examples/routing.yaml",
        default_connector="webhook",
    )
    assert [r.name for r in ruleset.rules] == [
        "vip-whatsapp",
        "dach-german",
        "billing-business",
        "digital-channels",
    ]
    assert ruleset.route(Facts(channel="WHATSAPP", tags=("vip",))).route.priority == 10
