"""The code blocks of the documentation (README.md and docs/), as tests/test_docs_examples.py runs them.

A fenced block is one of:

- a **file**: it has `title="path"` (```` ```python title="tasks.py" ````): written to that path in
  the page's working directory, for the blocks after it to use;
- **runnable**, by its language: `python` (run as a script), `sql` (executed on the page's
  database), `console` (each `$ command` run by bash; the lines after it, if any, are the
  expected standard output, where a line `...` stands for any number of lines and `...` inside a
  line for any text), `sh`/`bash` (run as one bash script);
- **not run**: marked `{.no-run}` (```` ```toml {.no-run} ````: a fragment, a file for another
  machine, a command that needs a cloud account), or `text` (diagrams, sample output).

Any other block is an error: a new example is either run or says why not.

A page may carry directives in an HTML comment at the start of a line,
`<!-- docs-test: key=value; key=value -->`:
`requires=module` (skip the page unless it imports, e.g. the app plugin), `ends=completed,failed`
(the statuses jobs may end in; default completed, cancelled), `jobs=validate` (do not run the
jobs left at the end, only check their payloads against their handlers: for job types that call
external services) and `database=empty` (start from a database with no migration applied, as a
new reader does; otherwise the page's database is migrated).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE = frozenset({"python", "sql", "console", "sh", "bash"})
NEVER_RUN = frozenset({"text"})
DEFAULT_ENDS = ("completed", "cancelled")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_TITLE = re.compile(r'title="(?P<title>[^"]*)"')
_BRACES = re.compile(r"\{(?P<attrs>[^}]*)\}")
_DIRECTIVE = re.compile(r"^<!--\s*docs-test:(?P<body>.*?)-->", re.DOTALL | re.MULTILINE)


class DocsExampleError(ValueError):
    """A code block the tests cannot classify, or a malformed directive."""


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    title: str | None
    no_run: bool
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> str:
        """file, run or skip."""
        if self.no_run or self.language in NEVER_RUN:
            return "skip"
        if self.title:
            return "file"
        if self.language in RUNNABLE:
            return "run"
        raise DocsExampleError(
            f"{self.where}: a ```{self.language or '(no language)'} block neither runs nor is marked: give it a"
            ' title="file" to write it for the blocks after it, or mark it {.no-run} (text blocks never run)'
        )


@dataclass(frozen=True)
class Page:
    path: Path
    blocks: list[Block]
    requires: tuple[str, ...] = ()
    ends: tuple[str, ...] = DEFAULT_ENDS
    validate_jobs: bool = False
    empty_database: bool = False

    @property
    def runs_anything(self) -> bool:
        """Whether a block runs or writes a file (an unclassified block is reported by its own test)."""
        for block in self.blocks:
            try:
                if block.kind in ("run", "file"):
                    return True
            except DocsExampleError:
                continue
        return False


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)

    def handler_modules(self) -> list[str]:
        """The modules this command loads handlers from (--handlers M), for the page's last daemon."""
        words = shlex.split(self.line, comments=True)
        modules = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--handlers"]
        modules += [word.split("=", 1)[1] for word in words if word.startswith("--handlers=")]
        return modules


def parse_info(info: str) -> tuple[str, str | None, bool]:
    """Language, title and whether it is marked {.no-run}, from a fence's info string."""
    info = info.strip()
    no_run = False
    language = ""
    title_match = _TITLE.search(info)
    title = title_match.group("title") if title_match else None
    braces = _BRACES.search(info)
    if braces:
        if title_match and not braces.start() <= title_match.start() < braces.end():
            # pymdownx.superfences does not take this form: the block would render as text
            raise DocsExampleError(f'write ```lang {{.no-run title="..."}}, not {info!r}')
        classes = braces.group("attrs").split()
        no_run = ".no-run" in classes
        rest = [c[1:] for c in classes if c.startswith(".") and c != ".no-run"]
        if info.startswith("{") and rest:
            language = rest[0]
        info = (info[: braces.start()] + info[braces.end() :]).strip()
    elif title_match:
        info = (info[: title_match.start()] + info[title_match.end() :]).strip()
    if not language and info:
        language = info.split()[0]
    return language.lower(), title, no_run


def parse_blocks(path: Path, text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        language, title, no_run = parse_info(opening.group("info"))
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing
                and closing.group("fence")[0] == fence[0]
                and len(closing.group("fence")) >= len(fence)
                and not closing.group("info").strip()
            ):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        else:
            raise DocsExampleError(f"{path}:{i + 1}: code block never closed")
        blocks.append(Block(path, i + 1, language, title, no_run, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def parse_page(path: Path, root: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    relative = path.relative_to(root)
    requires: tuple[str, ...] = ()
    ends = DEFAULT_ENDS
    validate_jobs = False
    empty_database = False
    for directive in _DIRECTIVE.finditer(text):
        for item in filter(None, (part.strip() for part in directive.group("body").split(";"))):
            key, _, value = item.partition("=")
            values = tuple(v.strip() for v in value.split(",") if v.strip())
            if key.strip() == "requires":
                requires += values
            elif key.strip() == "ends":
                ends = values
            elif key.strip() == "jobs" and values == ("validate",):
                validate_jobs = True
            elif key.strip() == "database" and values == ("empty",):
                empty_database = True
            else:
                raise DocsExampleError(f"{relative}: unknown docs-test directive {item!r}")
    return Page(relative, parse_blocks(relative, text), requires, ends, validate_jobs, empty_database)


def parse_console(block: Block) -> list[Command]:
    """`$ command` lines (a trailing backslash continues one) and the expected output after each."""
    commands: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + "\n" + lines[i]
            commands.append(Command(command))
        elif commands:
            commands[-1].expected.append(line)
        elif line.strip():
            raise DocsExampleError(f"{block.where}: console output before any `$ command`")
        i += 1
    if not commands:
        raise DocsExampleError(f"{block.where}: a console block without a `$ command`")
    return commands


def output_matches(expected: list[str], actual: str) -> bool:
    """Whether `actual` is `expected`, where `...` is a wildcard (a whole line: any lines)."""
    while expected and not expected[-1].strip():
        expected = expected[:-1]
    pattern = ""
    for line in expected:
        if line.strip() == "...":
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += r"[^\n]*?".join(re.escape(piece) for piece in line.rstrip().split("...")) + r"\n"
    normalised = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return re.fullmatch(pattern, normalised) is not None


def documentation_pages(root: Path) -> list[Path]:
    """README.md and every page of the site."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
