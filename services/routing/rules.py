"""The routing rules language: parsing and validating the YAML file, and matching a
conversation's facts against the rules (first match wins, else the default route).

The format is documented in docs/routing.md. Parsing is strict: unknown keys, wrong
types and duplicate rule names are errors that name the rule and the line, all reported
at once (:class:`RulesError`), so a typo never silently changes routing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

_INT32_MAX = 2**31 - 1
_TOP_KEYS = ("default", "rules")
_RULE_KEYS = ("name", "match", "route", "hours")
_HOURS_KEYS = ("timezone", "weekly", "holidays")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
OUTSIDE_HOURS = "outside_hours"
"""The rejection of a decision whose rule's opening hours are closed."""
_MATCH_KEYS = ("channel", "tags_any", "tags_all", "metadata", "language")
_ROUTE_KEYS = ("connector", "queue", "priority", "skills")


class RulesError(ValueError):
    """The rules file is invalid; ``errors`` lists every problem (with rule and line)."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        super().__init__(f"invalid routing rules {source}: " + "; ".join(errors))
        self.source = source
        self.errors = tuple(errors)


@dataclass(frozen=True)
class Route:
    """Where a matching conversation goes."""

    connector: str
    queue: str = ""
    priority: int = 0
    skills: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """A route plus the name of the rule that chose it ("default" when none matched);
    ``rejection`` non-empty (:data:`OUTSIDE_HOURS`) means: open no case."""

    route: Route
    rule: str
    rejection: str = ""


@dataclass(frozen=True)
class OpeningHours:
    """When a rule's contact center takes conversations: per weekday (0 = Monday)
    half-open minute ranges [start, end) of local time in ``zone``, none on
    ``holidays`` (local dates)."""

    zone: ZoneInfo
    weekly: Mapping[int, tuple[tuple[int, int], ...]]
    holidays: frozenset[date] = frozenset()

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        if local.date() in self.holidays:
            return False
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.weekly.get(local.weekday(), ()))

    def describe(self, moment: datetime) -> str:
        local = moment.astimezone(self.zone)
        if local.date() in self.holidays:
            return f"hours: {local:%Y-%m-%d} is a holiday in {self.zone.key}: closed"
        state = "open" if self.is_open(moment) else "closed"
        return f"hours: {WEEKDAYS[local.weekday()]} {local:%H:%M} {self.zone.key}: {state}"


@dataclass(frozen=True)
class MetadataCondition:
    """``metadata.<key>`` equals one of ``values``, or matches ``pattern`` (re.search)."""

    key: str
    values: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Match:
    """The conditions of a rule; ``None`` means "no condition on this fact"."""

    channels: tuple[str, ...] | None = None
    tags_any: tuple[str, ...] | None = None
    tags_all: tuple[str, ...] | None = None
    metadata: tuple[MetadataCondition, ...] = ()
    languages: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Rule:
    """One named rule of the file."""

    name: str
    line: int
    match: Match
    route: Route
    hours: OpeningHours | None = None


@dataclass(frozen=True)
class Facts:
    """What routing looks at (taken from ccbridge.common.v1.ConversationContext)."""

    channel: str = ""
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] | None = None
    language: str = ""


@dataclass(frozen=True)
class Evaluation:
    """One rule's outcome with one readable reason per condition."""

    rule: str
    matched: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RuleSet:
    """The rules in force. ``source`` is the file path ('' when only the default exists)."""

    rules: tuple[Rule, ...]
    default: Route
    source: str = ""

    def route(self, facts: Facts, now: datetime | None = None) -> Decision:
        """The first matching rule's route, else the default route; rejected
        (:data:`OUTSIDE_HOURS`) when that rule's opening hours are closed at ``now``."""
        return self.explain(facts, now)[0]

    def explain(
        self, facts: Facts, now: datetime | None = None
    ) -> tuple[Decision, list[Evaluation]]:
        """Like :meth:`route`, with every evaluation up to and including the first match."""
        moment = now or datetime.now(UTC)
        evaluations: list[Evaluation] = []
        for rule in self.rules:
            outcome = evaluate(rule, facts)
            if outcome.matched and rule.hours is not None:
                # Hours do not make a rule match or not: a closed contact center rejects.
                outcome = Evaluation(
                    outcome.rule, True, (*outcome.reasons, rule.hours.describe(moment))
                )
            evaluations.append(outcome)
            if outcome.matched:
                closed = rule.hours is not None and not rule.hours.is_open(moment)
                rejection = OUTSIDE_HOURS if closed else ""
                return Decision(rule.route, rule.name, rejection), evaluations
        return Decision(self.default, "default"), evaluations


def default_only(default_connector: str) -> RuleSet:
    """The rule set used when no rules file is configured."""
    return RuleSet(rules=(), default=Route(connector=default_connector), source="")


# --- matching -------------------------------------------------------------------------


def _fmt(values: Iterable[str]) -> str:
    return "[" + ", ".join(values) + "]"


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _norm_language(value: str) -> str:
    return value.strip().replace("_", "-").lower()


def _language_matches(language: str, wanted: str) -> bool:
    # "de" matches "de", "de-AT" and "de_AT"; "de-AT" matches only "de-AT".
    have, want = _norm_language(language), _norm_language(wanted)
    return bool(have) and (have == want or have.startswith(want + "-"))


def evaluate(rule: Rule, facts: Facts) -> Evaluation:
    """Evaluates every condition of ``rule`` (all of them, so the reasons are complete)."""
    match = rule.match
    reasons: list[str] = []
    matched = True

    if match.channels is not None:
        ok = facts.channel.upper() in match.channels
        reasons.append(f"channel {facts.channel or '(none)'} in {_fmt(match.channels)}: {_yes(ok)}")
        matched &= ok

    tags = {t.casefold() for t in facts.tags}
    if match.tags_any is not None:
        ok = any(t.casefold() in tags for t in match.tags_any)
        reasons.append(f"tags_any {_fmt(match.tags_any)} in tags {_fmt(facts.tags)}: {_yes(ok)}")
        matched &= ok
    if match.tags_all is not None:
        missing = [t for t in match.tags_all if t.casefold() not in tags]
        ok = not missing
        detail = "" if ok else f" (missing {_fmt(missing)})"
        reasons.append(
            f"tags_all {_fmt(match.tags_all)} in tags {_fmt(facts.tags)}: {_yes(ok)}{detail}"
        )
        matched &= ok

    metadata = facts.metadata or {}
    for cond in match.metadata:
        value = metadata.get(cond.key)
        if value is None:
            ok = False
            reasons.append(f"metadata.{cond.key} is missing: no")
        elif cond.pattern is not None:
            ok = cond.pattern.search(value) is not None
            reasons.append(
                f"metadata.{cond.key} {value!r} matches /{cond.pattern.pattern}/: {_yes(ok)}"
            )
        else:
            ok = value in cond.values
            shown = _fmt(repr(v) for v in cond.values)
            reasons.append(f"metadata.{cond.key} {value!r} in {shown}: {_yes(ok)}")
        matched &= ok

    if match.languages is not None:
        ok = any(_language_matches(facts.language, want) for want in match.languages)
        reasons.append(
            f"language {facts.language or '(none)'} in {_fmt(match.languages)}: {_yes(ok)}"
        )
        matched &= ok

    if not reasons:
        reasons.append("no conditions: matches every conversation")
    return Evaluation(rule.name, matched, tuple(reasons))


# --- parsing --------------------------------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers the line it started on."""

    line: int = 0


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings carry their line and reject duplicate keys."""


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        if isinstance(key, str | int | float | bool):
            seen.add(key)
    result = _Map(loader.construct_mapping(node, deep=True))
    result.line = node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


class _Parser:
    """Walks the loaded document, collecting every error."""

    def __init__(self, source: str, default_connector: str) -> None:
        self.source = source
        self.default_connector = default_connector
        self.errors: list[str] = []

    def error(self, line: int, where: str, message: str) -> None:
        self.errors.append(f"{self.source}:{line}: {where}: {message}")

    def check_keys(self, value: _Map, allowed: tuple[str, ...], where: str) -> None:
        for key in value:
            if key not in allowed:
                allowed_text = ", ".join(allowed)
                self.error(value.line, where, f"unknown key {key!r} (allowed: {allowed_text})")

    def strings(
        self,
        value: object,
        line: int,
        where: str,
        *,
        upper: bool = False,
        allow_scalar: bool = True,
    ) -> tuple[str, ...] | None:
        items: list[object]
        if isinstance(value, str) and allow_scalar:
            items = [value]
        elif isinstance(value, list):
            items = value
        else:
            kind = "a string or a list of strings" if allow_scalar else "a list of strings"
            self.error(line, where, f"must be {kind}")
            return None
        out: list[str] = []
        for item in items:
            if not isinstance(item, str) or not item.strip():
                self.error(line, where, f"every entry must be a non-empty string, got {item!r}")
                return None
            out.append(item.strip().upper() if upper else item.strip())
        return tuple(out)

    def nonempty_strings(
        self, value: object, line: int, where: str, *, upper: bool = False
    ) -> tuple[str, ...] | None:
        items = self.strings(value, line, where, upper=upper)
        if items is not None and not items:
            self.error(line, where, "must not be empty (remove the condition to match anything)")
            return None
        return items

    def route(self, value: object, line: int, where: str, fallback_connector: str) -> Route:
        if not isinstance(value, _Map):
            self.error(line, where, "must be a mapping with connector, queue, priority, skills")
            return Route(connector=fallback_connector)
        line = value.line
        self.check_keys(value, _ROUTE_KEYS, where)
        connector = value.get("connector", fallback_connector)
        if not isinstance(connector, str) or not connector.strip():
            self.error(line, where, f"connector must be a non-empty string, got {connector!r}")
            connector = fallback_connector
        queue = value.get("queue", "")
        if queue is None:
            queue = ""
        if not isinstance(queue, str):
            self.error(line, where, f"queue must be a string (quote it), got {queue!r}")
            queue = ""
        priority = value.get("priority", 0)
        if priority is None:
            priority = 0
        if isinstance(priority, bool) or not isinstance(priority, int):
            self.error(line, where, f"priority must be an integer, got {priority!r}")
            priority = 0
        elif not -_INT32_MAX <= priority <= _INT32_MAX:
            self.error(line, where, f"priority out of range: {priority}")
            priority = 0
        raw_skills = value.get("skills", [])
        skills = () if raw_skills is None else self.strings(raw_skills, line, f"{where} skills")
        return Route(
            connector=connector.strip(), queue=queue, priority=priority, skills=skills or ()
        )

    def metadata(self, value: object, line: int, where: str) -> tuple[MetadataCondition, ...]:
        if not isinstance(value, _Map):
            self.error(line, where, "must be a mapping of key: value | [values] | {regex: ...}")
            return ()
        out: list[MetadataCondition] = []
        for key, expected in value.items():
            here = f"{where}.{key}"
            if not isinstance(key, str) or not key:
                self.error(value.line, where, f"keys must be non-empty strings, got {key!r}")
                continue
            if isinstance(expected, _Map):
                self.check_keys(expected, ("regex",), here)
                pattern = expected.get("regex")
                if not isinstance(pattern, str) or not pattern:
                    self.error(expected.line, here, "regex must be a non-empty string")
                    continue
                try:
                    out.append(MetadataCondition(key, pattern=re.compile(pattern)))
                except re.error as exc:
                    self.error(expected.line, here, f"invalid regex {pattern!r}: {exc}")
                continue
            items = expected if isinstance(expected, list) else [expected]
            values: list[str] = []
            for item in items:
                text = _scalar_text(item)
                if text is None:
                    self.error(value.line, here, f"values must be scalars, got {item!r}")
                    break
                values.append(text)
            else:
                if not values:
                    self.error(value.line, here, "must not be an empty list")
                    continue
                out.append(MetadataCondition(key, values=tuple(values)))
        return tuple(out)

    def hours(self, value: object, line: int, where: str) -> OpeningHours | None:
        if not isinstance(value, _Map):
            self.error(line, where, "must be a mapping with timezone, weekly, holidays")
            return None
        line = value.line
        self.check_keys(value, _HOURS_KEYS, where)
        zone_name = value.get("timezone")
        zone: ZoneInfo | None = None
        if not isinstance(zone_name, str) or not zone_name.strip():
            self.error(line, where, "timezone must be an IANA time zone, e.g. Europe/Zagreb")
        else:
            try:
                zone = ZoneInfo(zone_name.strip())
            except (ZoneInfoNotFoundError, ValueError):
                self.error(line, where, f"unknown time zone {zone_name!r}")
        weekly: dict[int, tuple[tuple[int, int], ...]] = {}
        raw_weekly = value.get("weekly")
        if not isinstance(raw_weekly, _Map):
            self.error(line, f"{where}.weekly", "must be a mapping of mon..sun to ranges")
        else:
            self.check_keys(raw_weekly, WEEKDAYS, f"{where}.weekly")
            for day, ranges in raw_weekly.items():
                if day in WEEKDAYS:
                    weekly[WEEKDAYS.index(day)] = self.ranges(
                        ranges, raw_weekly.line, f"{where}.weekly.{day}"
                    )
        holidays: set[date] = set()
        raw_holidays = value.get("holidays") or []
        if not isinstance(raw_holidays, list):
            self.error(line, f"{where}.holidays", "must be a list of dates (YYYY-MM-DD)")
            raw_holidays = []
        for item in raw_holidays:
            if isinstance(item, date) and not isinstance(item, datetime):
                holidays.add(item)  # YAML reads an unquoted 2025-12-25 as a date
                continue
            try:
                holidays.add(date.fromisoformat(str(item)))
            except ValueError:
                self.error(line, f"{where}.holidays", f"not a date (YYYY-MM-DD): {item!r}")
        if zone is None:
            return None
        return OpeningHours(zone, weekly, frozenset(holidays))

    def ranges(self, value: object, line: int, where: str) -> tuple[tuple[int, int], ...]:
        items = [] if value is None else value if isinstance(value, list) else [value]
        out: list[tuple[int, int]] = []
        for item in items:
            found = _RANGE.match(item) if isinstance(item, str) else None
            if found is None:
                self.error(line, where, f"ranges are 'HH:MM-HH:MM', got {item!r}")
                continue
            h1, m1, h2, m2 = (int(part) for part in found.groups())
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60 or start >= end:
                self.error(
                    line,
                    where,
                    f"{item!r}: start before end within one day (00:00-24:00; "
                    "split a range over midnight into two days)",
                )
                continue
            out.append((start, end))
        return tuple(sorted(out))

    def match(self, value: object, line: int, where: str) -> Match:
        if value is None:
            return Match()
        if not isinstance(value, _Map):
            self.error(line, where, "must be a mapping")
            return Match()
        line = value.line
        self.check_keys(value, _MATCH_KEYS, where)
        channels = tags_any = tags_all = languages = None
        if "channel" in value:
            channels = self.nonempty_strings(value["channel"], line, f"{where}.channel", upper=True)
        if "tags_any" in value:
            tags_any = self.nonempty_strings(value["tags_any"], line, f"{where}.tags_any")
        if "tags_all" in value:
            tags_all = self.nonempty_strings(value["tags_all"], line, f"{where}.tags_all")
        if "language" in value:
            languages = self.nonempty_strings(value["language"], line, f"{where}.language")
        metadata = (
            self.metadata(value["metadata"], line, f"{where}.metadata")
            if "metadata" in value
            else ()
        )
        return Match(
            channels=channels,
            tags_any=tags_any,
            tags_all=tags_all,
            metadata=metadata,
            languages=languages,
        )

    def document(self, doc: object) -> RuleSet:
        if not isinstance(doc, _Map):
            self.error(1, "file", "must be a mapping with 'default' and/or 'rules'")
            return RuleSet((), Route(self.default_connector), self.source)
        self.check_keys(doc, _TOP_KEYS, "file")
        default = Route(self.default_connector)
        if doc.get("default") is not None:
            default = self.route(doc["default"], doc.line, "default", self.default_connector)
        raw_rules = doc.get("rules")
        rules: list[Rule] = []
        if raw_rules is None:
            raw_rules = []
        if not isinstance(raw_rules, list):
            self.error(doc.line, "rules", "must be a list of rules")
            raw_rules = []
        names: dict[str, int] = {}
        for index, raw in enumerate(raw_rules, start=1):
            where = f"rule #{index}"
            if not isinstance(raw, _Map):
                self.error(doc.line, where, "must be a mapping with name, match, route")
                continue
            name = raw.get("name")
            if isinstance(name, str) and name.strip():
                name = name.strip()
                where = f"rule {name!r}"
                if name == "default":
                    self.error(raw.line, where, "the name 'default' is reserved")
                if name in names:
                    self.error(raw.line, where, f"duplicate name (first at line {names[name]})")
                names.setdefault(name, raw.line)
            else:
                self.error(raw.line, where, "name must be a non-empty string")
                name = f"#{index}"
            self.check_keys(raw, _RULE_KEYS, where)
            match = self.match(raw.get("match"), raw.line, f"{where} match")
            if "route" not in raw:
                self.error(raw.line, where, "route is required")
                continue
            route = self.route(raw["route"], raw.line, f"{where} route", default.connector)
            hours = (
                self.hours(raw["hours"], raw.line, f"{where} hours")
                if raw.get("hours") is not None
                else None
            )
            rules.append(Rule(name=name, line=raw.line, match=match, route=route, hours=hours))
        return RuleSet(tuple(rules), default, self.source)


def _scalar_text(value: object) -> str | None:
    # Metadata values are strings at Infobip; YAML may have typed `tier: 1` or `vip: true`.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def parse_rules(text: str, *, source: str, default_connector: str) -> RuleSet:
    """Parses a rules document; raises :class:`RulesError` naming every problem."""
    if not text.strip():
        # An empty file is almost always a half-written one: refuse it (write `rules: []`).
        raise RulesError(source, [f"{source}: file is empty (write 'rules: []' for no rules)"])
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise RulesError(source, [f"{source}:{line}: YAML error: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise RulesError(source, [f"{source}: YAML error: {exc}"]) from None
    except ValueError as exc:  # a scalar YAML types but cannot build, e.g. 2025-13-01
        raise RulesError(source, [f"{source}: YAML error: {exc}"]) from None
    parser = _Parser(source, default_connector)
    ruleset = parser.document(doc)
    if parser.errors:
        raise RulesError(source, parser.errors)
    return ruleset
