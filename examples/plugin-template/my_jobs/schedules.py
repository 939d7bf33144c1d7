"""The plugin's cron schedules (entry point `jobrunner.schedules`)."""

from __future__ import annotations

from jobrunner import Schedule

SCHEDULES = [
    Schedule(name="my_jobs.morning-greeting", cron="0 9 * * *", job_type="greet", payload={"name": "world"}),
]
