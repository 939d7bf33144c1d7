"""The plugin's maintenance jobs are declared as cron schedules through its entry point."""

from __future__ import annotations

from jobrunner.registry import HandlerRegistry
from jobrunner.schedules import declared_schedules
from jobrunner.settings import Settings
from jobrunner_handlers.periodic import CRON_SCHEDULES, SCHEDULES

# every schedule the plugin declares, with when and why
EXPECTED = {
    # the per-user statistics view
    "app.refresh_user_statistics": ("0 * * * *", "refresh_user_statistics", "UTC"),
    "app.purge_expired_cache": ("0 2 * * *", "purge_expired_cache", "UTC"),
    "app.cleanup_old_metrics": ("0 3 * * 0", "cleanup_old_metrics", "UTC"),
    # month partitions: this month and the next three, rows moved out of the default partitions
    "app.maintain_partitions": ("15 0 * * *", "maintain_partitions", "UTC"),
    # unused uploads (objects no row names, older than 90 days)
    "app.cleanup_old_data": ("30 3 * * *", "cleanup_old_data", "UTC"),
    # analysis months past the retention, to the archive bucket: monthly, as the backend document asks
    "app.archive_old_analyses": ("0 4 1 * *", "archive_old_analyses", "UTC"),
}


def test_the_plugin_declares_every_schedule_of_its_list() -> None:
    declared = declared_schedules(Settings(plugin_schedules=True))
    crons = {name: (s.cron, s.job_type, s.timezone) for name, s in declared.items() if name.startswith("app.")}
    assert crons == EXPECTED
    assert {f"app.{job_type}": cron for job_type, cron in SCHEDULES.items()} == {
        name: cron for name, (cron, _, _) in EXPECTED.items()
    }


def test_every_scheduled_job_type_has_a_handler_in_the_plugin() -> None:
    registry = HandlerRegistry.discover()
    missing = [s.job_type for s in CRON_SCHEDULES if registry.get(s.job_type) is None]
    assert missing == []


def test_plugin_schedules_can_be_switched_off() -> None:
    assert not any(name.startswith("app.") for name in declared_schedules(Settings(plugin_schedules=False)))
