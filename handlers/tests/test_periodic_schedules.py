"""The plugin's maintenance jobs are declared as cron schedules through its entry point."""

from __future__ import annotations

from jobrunner.schedules import declared_schedules
from jobrunner.settings import Settings


def test_the_plugin_declares_the_apps_three_schedules() -> None:
    declared = declared_schedules(Settings(plugin_schedules=True))
    crons = {name: (s.cron, s.job_type, s.timezone) for name, s in declared.items() if name.startswith("app.")}
    assert crons == {
        "app.refresh_user_statistics": ("0 * * * *", "refresh_user_statistics", "UTC"),
        "app.purge_expired_cache": ("0 2 * * *", "purge_expired_cache", "UTC"),
        "app.cleanup_old_metrics": ("0 3 * * 0", "cleanup_old_metrics", "UTC"),
    }


def test_plugin_schedules_can_be_switched_off() -> None:
    assert not any(name.startswith("app.") for name in declared_schedules(Settings(plugin_schedules=False)))
