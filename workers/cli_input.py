"""What the command-line tools (`workers.plan`, `workers.dispatch`, `workers.simulate`) read
before they act: the settings, the catalog and one checked scenario; and the one error type
for input they cannot use (exit status 2).

The loaders are config/'s (the worker reads job metadata with them too). What is decided here
is the command line's policy: a local user may name a scenario file anywhere
(`allow_outside=True`, which untrusted job metadata never gets), and every problem becomes one
BadInput whose message names the file or the flag, the field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.catalog import Catalog, load_catalog
from config.errors import ConfigError
from config.scenario import Scenario, check_scenario, load_scenario, resolve_scenario_path
from config.settings import SETTINGS_ERRORS, Settings, describe_settings_error, get_settings

EXIT_OK, EXIT_BAD_INPUT, EXIT_NO_CAST = 0, 2, 3
SCENARIO_HELP = "a scenario name in SCENARIOS_DIR, a JSON file, or inline JSON"


class BadInput(ValueError):
    """Input or settings a command cannot use; the message says what, where, and the fix.
    `code` names the kind of problem for callers that answer in JSON (the rooms API):
    bad_settings, bad_scenario, bad_identity, bad_room, not_configured."""

    def __init__(self, message: str, code: str = "bad_input") -> None:
        super().__init__(message)
        self.code = code


def read_settings() -> Settings:
    """The settings (environment and `.env`); raises BadInput naming each bad setting, never
    its value."""
    try:
        return get_settings()
    except SETTINGS_ERRORS as e:
        raise BadInput(f"bad settings: {describe_settings_error(e)}", "bad_settings") from None


@dataclass(frozen=True)
class ScenarioInput:
    """The catalog, and the scenario the command line named, checked against it."""

    catalog: Catalog
    scenario: Scenario
    path: Path | None  # the file it was read from, resolved; None for inline JSON


def is_inline(ref: str) -> bool:
    """Whether the scenario argument is JSON text rather than a name or a path (as
    config.scenario.load_scenario decides)."""
    return ref.lstrip().startswith("{")


def load_scenario_input(
    ref: str, settings: Settings, *, allow_outside: bool = True
) -> ScenarioInput:
    """Load the catalog, then the scenario `ref` names (a name in SCENARIOS_DIR, a file path,
    or inline JSON) and check it against the catalog. Raises BadInput with config's message:
    the file, the JSON path of the field, and the fix (its cause is the ConfigError, with the
    problems one by one). A remote caller (the rooms API) gets `allow_outside=False`: names
    only inside SCENARIOS_DIR, as job metadata."""
    try:
        catalog = load_catalog(settings.catalog_path)
        path = None
        if not is_inline(ref):
            path = resolve_scenario_path(ref, settings.scenarios_dir, allow_outside=allow_outside)
        scenario = load_scenario(
            path or ref, scenarios_dir=settings.scenarios_dir, allow_outside=allow_outside
        )
        check_scenario(scenario, catalog, ref)
    except ConfigError as e:
        raise BadInput(str(e), "bad_scenario") from e
    return ScenarioInput(catalog, scenario, path)
