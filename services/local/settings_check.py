"""Every component's settings checked at once, with the readers the components use
themselves (``<Settings>.from_env``, and the routing rules file as routing loads it).

``ccbridge up`` runs it before it starts anything, ``ccbridge doctor`` on the environment
it is run in: one report names every missing or invalid setting of every component, each
problem once with the components that share it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ccbridge.services.runtime.settings import SettingsError

if TYPE_CHECKING:
    from ccbridge.services.routing.settings import RoutingSettings

COMPONENTS = ("gateway", "session", "history", "routing", "connector")
# component → "module:class" of its settings (imported lazily: one component's
# dependencies load only when it is checked).
READERS = {
    "gateway": "ccbridge.gateway.settings:GatewaySettings",
    "session": "ccbridge.services.session.settings:SessionSettings",
    "history": "ccbridge.services.history.settings:HistorySettings",
    "routing": "ccbridge.services.routing.settings:RoutingSettings",
    "connector": "ccbridge.services.connector.settings:ConnectorSettings",
}


@dataclass(frozen=True)
class SettingsReport:
    """Problem → the components that report it, in the order first seen."""

    problems: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [f"{problem}  ({', '.join(who)})" for problem, who in self.problems.items()]


def _routing_rules(settings: RoutingSettings) -> None:
    """Loads the rules file as the routing service does at start-up."""
    from ccbridge.services.routing.rules import RulesError
    from ccbridge.services.routing.store import RulesStore

    store = RulesStore(settings.rules_path, default_connector=settings.default_connector)
    try:
        store.load_initial()
    except RulesError as exc:
        raise SettingsError(f"CCBRIDGE_ROUTING_RULES: {exc}") from None


def check_settings(
    env_of: Callable[[str], Mapping[str, str]], components: Sequence[str] = COMPONENTS
) -> SettingsReport:
    """Reads the settings of each of ``components`` (default: all) from
    ``env_of(component)``."""
    problems: dict[str, list[str]] = {}
    for name in components:
        module, _, cls = READERS[name].partition(":")
        reader = getattr(importlib.import_module(module), cls)
        try:
            settings = reader.from_env(env_of(name))
            if name == "routing":
                _routing_rules(settings)
        except SettingsError as exc:
            for problem in exc.problems:
                problems.setdefault(problem, []).append(name)
    return SettingsReport(problems)
