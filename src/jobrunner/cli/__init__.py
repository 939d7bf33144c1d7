"""`jobrunner …`: run, migrate, enqueue, status, retry, cancel, schedules, demo, db.

One module per command group, each registering its parser and importing what its command
alone needs when it runs; `main` (jobrunner.cli.main) reads the settings and runs the command.
"""

from jobrunner.cli.main import main
from jobrunner.cli.parser import build_parser, version_report

__all__ = ["build_parser", "main", "version_report"]
