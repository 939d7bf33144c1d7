"""The plugin's tables and functions, as jobrunner migrations (entry point `jobrunner.migrations`)."""

from __future__ import annotations

from jobrunner import MigrationSet

# my_jobs/migrations/NNNN_*.sql, applied once each, and my_jobs/functions/*.sql, applied again
# whenever a file changes; "my_jobs" is the component name recorded in jobrunner_migrations
MIGRATIONS = MigrationSet.from_package("my_jobs", "my_jobs")
