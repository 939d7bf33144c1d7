"""docs/reference/cli.md documents every command, every option and each command's exit codes."""

from __future__ import annotations

import re

from jobrunner.cli import build_parser
from tests.support import REPO_ROOT
from tests.test_cli import subcommands

REFERENCE = REPO_ROOT / "docs" / "reference" / "cli.md"
_HEADING = re.compile(r"^#{2,3} `(jobrunner[^`]*)`$", re.MULTILINE)


def sections() -> dict[str, str]:
    """Each command's section of the reference, from its heading to the next command's."""
    text = REFERENCE.read_text()
    marks = list(_HEADING.finditer(text))
    return {
        mark.group(1): text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        for i, mark in enumerate(marks)
    }


def test_every_command_has_a_section() -> None:
    assert set(subcommands(build_parser())) == set(sections())


def test_every_option_is_in_its_commands_section() -> None:
    documented = sections()
    missing = [
        f"{name} {option}"
        for name, parser in subcommands(build_parser()).items()
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help" and f"`{option}" not in documented[name]
    ]
    assert missing == []


def test_every_command_lists_its_exit_codes() -> None:
    undocumented = [
        name
        for name, section in sections().items()
        if name != "jobrunner db" and "Exit code" not in " ".join(section.split()) and "| exit |" not in section
    ]
    assert undocumented == []
    assert "| 3 |" in REFERENCE.read_text()  # cancel's "nothing to cancel"
