"""The app's schema as jobrunner plugin migrations (entry point group `jobrunner.migrations`).

The app's tables live in `public`, the schema Supabase's PostgREST exposes to the mobile app,
whatever schema jobrunner itself uses; the files name `public` explicitly. `{schema}` (jobrunner's
schema) appears only where the app reaches into the queue.
"""

from __future__ import annotations

from jobrunner import MigrationSet

MIGRATIONS = MigrationSet.from_package("jobrunner_app", "jobrunner_handlers")
