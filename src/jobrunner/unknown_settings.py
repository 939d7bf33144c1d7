"""`JOBRUNNER_*` variables that no setting reads: a mistyped name is otherwise silently ignored
(the settings take unknown names as none of theirs, `extra="ignore"`), and the default it leaves
in place can look like the value that was meant.

The known names are those of the core's settings and of each plugin's settings class, which a
plugin declares under the `jobrunner.settings` entry-point group (the app's plugin declares its
`JOBRUNNER_APP_*` settings so). The plugins are loaded only when some variable is not a core
setting, so a correct environment costs no entry-point scan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pydantic import AliasChoices
from pydantic_settings import BaseSettings, DotEnvSettingsSource

from jobrunner.plugin_entry_points import entry_points_of
from jobrunner.settings import Settings

SETTINGS_ENTRY_POINT_GROUP = "jobrunner.settings"
PREFIX = "JOBRUNNER_"
# read by jobrunner's own test suite (conftest.py: where the tests' embedded server lives;
# tests/test_dashboard_browser.py: where the dashboard's screenshots go), not by a setting
READ_ELSEWHERE = frozenset({"JOBRUNNER_TEST_EMBEDDED_DIR", "JOBRUNNER_TEST_SCREENSHOTS_DIR"})
# how alike (difflib's ratio, of the names after JOBRUNNER_) a known name must be to be suggested
_CLOSE_ENOUGH = 0.75


@dataclass(frozen=True)
class UnknownVariable:
    name: str
    source: str  # "environment" or the .env file
    suggestion: str | None

    def message(self) -> str:
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"{self.name} (set in the {self.source}) is not a jobrunner setting and is ignored{hint}"


@dataclass(frozen=True)
class Findings:
    unknown: list[UnknownVariable]
    # plugins whose settings could not be read: their variables could not be checked
    unreadable: list[str]


def variable_names(settings_class: type[BaseSettings]) -> frozenset[str]:
    """The environment variables `settings_class` reads, upper case (pydantic-settings matches
    them case-insensitively by default): its aliases where a field has some, else prefix + name."""
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, info in settings_class.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return frozenset(names)


def plugin_settings_classes(group: str = SETTINGS_ENTRY_POINT_GROUP) -> tuple[list[type[BaseSettings]], list[str]]:
    """The settings classes plugins declare, and a description of each declaration that could
    not be loaded."""
    found: list[type[BaseSettings]] = []
    unreadable: list[str] = []
    for point in sorted(entry_points_of(group), key=lambda p: p.name):
        origin = f"entry point {point.name} ({point.value})"
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plugin must not stop the check, only narrow it
            unreadable.append(f"{origin}: {type(exc).__name__}: {exc}")
            continue
        if isinstance(loaded, type) and issubclass(loaded, BaseSettings):
            found.append(loaded)
        else:
            unreadable.append(f"{origin}: {loaded!r} is not a pydantic-settings class")
    return found, unreadable


def dotenv_variables(settings_class: type[BaseSettings] = Settings) -> dict[str, str | None]:
    """What the settings read from their .env file(s), as they find them."""
    return dict(DotEnvSettingsSource(settings_class).env_vars)


def find_unknown_variables(
    sources: Mapping[str, Iterable[str]],
    plugins: Callable[[], tuple[list[type[BaseSettings]], list[str]]] = plugin_settings_classes,
) -> Findings:
    """The `JOBRUNNER_*` names in `sources` (source -> variable names) that nothing reads, each
    with the closest known name when one is close."""
    core = variable_names(Settings) | READ_ELSEWHERE
    candidates = [
        (name.upper(), source)
        for source, names in sources.items()
        for name in names
        if name.upper().startswith(PREFIX) and name.upper() not in core
    ]
    if not candidates:
        return Findings([], [])
    classes, unreadable = plugins()
    if unreadable:
        # a plugin's variables cannot be told from mistakes: say nothing rather than something false
        return Findings([], unreadable)
    by_prefix = {
        str(cls.model_config.get("env_prefix", "")).upper(): variable_names(cls)
        for cls in classes
        if str(cls.model_config.get("env_prefix", "")).upper().startswith(PREFIX)
        and str(cls.model_config.get("env_prefix", "")).upper() != PREFIX
    }
    every_name = core.union(*(variable_names(cls) for cls in classes)) - READ_ELSEWHERE
    unknown: list[UnknownVariable] = []
    for name, source in sorted(set(candidates)):
        if name in every_name:
            continue
        # a name under a plugin's prefix is that plugin's: suggest among its names only (the longest
        # prefix wins, should one plugin's prefix extend another's)
        owners = sorted((p for p in by_prefix if name.startswith(p)), key=len, reverse=True)
        known = by_prefix[owners[0]] if owners else every_name
        unknown.append(UnknownVariable(name, source, _closest(name, known)))
    return Findings(unknown, [])


def _closest(name: str, known: Iterable[str]) -> str | None:
    import difflib  # only when a name is unknown

    # compared after the shared JOBRUNNER_, which would make every pair look alike
    tails = {k.removeprefix(PREFIX): k for k in known if k.startswith(PREFIX)}
    match = difflib.get_close_matches(name.removeprefix(PREFIX), list(tails), n=1, cutoff=_CLOSE_ENOUGH)
    return tails[match[0]] if match else None
