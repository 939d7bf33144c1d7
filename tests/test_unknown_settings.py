"""Mistyped JOBRUNNER_ variables are named, with the setting that was probably meant; the names
the core, the app's plugin and the repository's own files use are never reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobrunner.unknown_settings import (
    READ_ELSEWHERE,
    dotenv_variables,
    find_unknown_variables,
    plugin_settings_classes,
    variable_names,
)
from tests.support import REPO_ROOT


def reported(*names: str) -> dict[str, str | None]:
    findings = find_unknown_variables({"environment": names})
    assert findings.unreadable == []
    return {unknown.name: unknown.suggestion for unknown in findings.unknown}


def test_mistyped_names_are_reported_with_the_closest_setting() -> None:
    assert reported(
        "JOBRUNNER_CONCURENCY",
        "JOBRUNNER_LOGLEVEL",
        "JOBRUNNER_QUEUE",
        "JOBRUNNER_NOTHING_LIKE_IT",
        "JOBRUNNER_APP_OPENAI_KEY",
        "jobrunner_pool_max",
    ) == {
        "JOBRUNNER_CONCURENCY": "JOBRUNNER_CONCURRENCY",
        "JOBRUNNER_LOGLEVEL": "JOBRUNNER_LOG_LEVEL",
        "JOBRUNNER_QUEUE": "JOBRUNNER_QUEUES",
        "JOBRUNNER_NOTHING_LIKE_IT": None,
        # under the app plugin's prefix: one of its settings
        "JOBRUNNER_APP_OPENAI_KEY": "JOBRUNNER_APP_OPENAI_API_KEY",
        "JOBRUNNER_POOL_MAX": "JOBRUNNER_POOL_MAX_SIZE",
    }


def test_the_names_settings_read_are_not_reported() -> None:
    assert (
        reported(
            "JOBRUNNER_CONCURRENCY",
            "jobrunner_concurrency",  # pydantic-settings reads names in any case
            "JOBRUNNER_SCHEMA",
            "JOBRUNNER_SCHEMA_NAME",
            "JOBRUNNER_DATABASE_URL",
            "JOBRUNNER_APP_OPENAI_MODEL",
            "JOBRUNNER_APP_OPENAI_API_KEY",
            "DATABASE_URL",
            "OTHER_TOOLS_VARIABLE",
            *READ_ELSEWHERE,
        )
        == {}
    )


# these files hold mistyped names on purpose; the others hold none
_OWN_TYPOS = {Path(__file__).resolve(), REPO_ROOT / "tests" / "test_cli.py"}
# test_bad_input: a name that must never be printed; docs/reference/cli.md: the warning's example
_NEGATIVE_EXAMPLES = {"JOBRUNNER_JOBRUNNER", "JOBRUNNER_CONCURENCY"}


def test_no_name_the_repository_uses_is_reported() -> None:
    """The docs, deploy files, units, CI, tests and plugin name these variables: none is unknown."""
    used: set[str] = set()
    for path in REPO_ROOT.rglob("*"):
        parts = path.relative_to(REPO_ROOT).parts
        if not path.is_file() or parts[0] in {".git", ".venv"} or "__pycache__" in parts or path in _OWN_TYPOS:
            continue
        if path.suffix in {".png", ".gz", ".whl"}:
            continue
        used |= set(re.findall(r"\bJOBRUNNER_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))
    used -= _NEGATIVE_EXAMPLES
    assert len(used) > 50  # the scan found the settings the README documents
    assert reported(*sorted(used)) == {}


class _Probe(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROBE_", extra="ignore")
    plain: str = "default"
    chosen: str = Field(default="default", validation_alias=AliasChoices("PROBE_OTHER", "ELSEWHERE"))
    single: str = Field(default="default", validation_alias="PROBE_SINGLE_ALIAS")


def test_the_names_listed_are_the_ones_pydantic_settings_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    names = variable_names(_Probe)
    assert names == {"PROBE_PLAIN", "PROBE_OTHER", "ELSEWHERE", "PROBE_SINGLE_ALIAS"}
    for name in names:
        monkeypatch.setenv(name, "set")
    assert _Probe().model_dump() == {"plain": "set", "chosen": "set", "single": "set"}
    # and the names left out are not read
    for name in names:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PROBE_CHOSEN", "set")
    monkeypatch.setenv("PROBE_SINGLE", "set")
    assert _Probe().model_dump() == {"plain": "default", "chosen": "default", "single": "default"}


def test_the_app_plugin_declares_its_settings() -> None:
    classes, unreadable = plugin_settings_classes()
    assert unreadable == []
    assert "JOBRUNNER_APP_UPLOADS_BUCKET" in set().union(*(variable_names(cls) for cls in classes))


def test_a_plugin_whose_settings_do_not_load_silences_the_check_and_says_so() -> None:
    def broken() -> tuple[list[type[BaseSettings]], list[str]]:
        return [], ["entry point app (x:Y): ImportError: no module named x"]

    findings = find_unknown_variables({"environment": ["JOBRUNNER_APP_ANYTHING"]}, plugins=broken)
    assert findings.unknown == []  # it may be the broken plugin's: no guess
    assert findings.unreadable == ["entry point app (x:Y): ImportError: no module named x"]


def test_a_correct_environment_loads_no_plugin() -> None:
    def must_not_run() -> tuple[list[type[BaseSettings]], list[str]]:
        raise AssertionError("plugins loaded for an environment of core settings only")

    findings = find_unknown_variables({"environment": ["JOBRUNNER_CONCURRENCY", "PATH"]}, plugins=must_not_run)
    assert findings.unknown == [] and findings.unreadable == []


def test_names_in_the_dotenv_file_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("JOBRUNNER_CONCURRENCY=4\nJOBRUNNER_SHUTDOWN_GRAC=10\n")
    findings = find_unknown_variables({".env file": dotenv_variables()})
    assert [(u.name, u.source, u.suggestion) for u in findings.unknown] == [
        ("JOBRUNNER_SHUTDOWN_GRAC", ".env file", "JOBRUNNER_SHUTDOWN_GRACE")
    ]
    assert "JOBRUNNER_SHUTDOWN_GRAC (set in the .env file) is not a jobrunner setting" in findings.unknown[0].message()
