"""How the commands print: tables that fit the terminal (or stay whole when piped), JSON and
errors with secrets masked."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from jobrunner.display import printable
from jobrunner.redaction import redact_text

if TYPE_CHECKING:
    from rich.console import Console

# wider than any table: piped output is never wrapped or cut
_UNWRAPPED_WIDTH = 1_000_000


def console() -> Console:
    """On a terminal, tables fit its width. Piped or redirected (`jobrunner status | grep`), each
    row stays whole on one line, whatever COLUMNS says: rich would otherwise wrap and cut them at
    COLUMNS, or at 80 columns when it is unset."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=_UNWRAPPED_WIDTH)


def print_json(value: Any) -> None:
    """Job data as JSON: control characters escaped (ensure_ascii), secrets masked."""
    print(redact_text(json.dumps(value, default=str, indent=2)))


def complain(message: str) -> None:
    """An error on stderr, with secrets masked and control characters written out."""
    print("\n".join(printable(line) for line in redact_text(message).splitlines()), file=sys.stderr)
