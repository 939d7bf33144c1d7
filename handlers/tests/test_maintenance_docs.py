"""docs/app/maintenance.md says what the plugin does: its schedules, its settings, its cache key."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobrunner_handlers.analysis import cache_key
from jobrunner_handlers.periodic import SCHEDULES
from jobrunner_handlers.settings import AppSettings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "app" / "maintenance.md"


def section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_the_schedule_table_lists_every_schedule_the_plugin_declares() -> None:
    rows = re.findall(r"^\| `app\.(\w+)` \| `([^`]+)` [^|]*\| `(\w+)` \|", section("Schedules"), re.MULTILINE)
    assert {name: cron for name, cron, _ in rows} == SCHEDULES
    assert all(name == job_type for name, _, job_type in rows)


def test_every_setting_the_page_names_exists() -> None:
    named = set(re.findall(r"JOBRUNNER_APP_([A-Z_]+[A-Z])", PAGE.read_text()))
    assert named and {name.lower() for name in named} <= set(AppSettings.model_fields)


def test_the_cache_key_the_page_gives_is_the_one_analyze_image_uses() -> None:
    [snippet] = re.findall(r"```python\n(.*?)```", section("The AI response cache"), re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # the page's own example, run as the docs promise
    documented: Callable[[bytes, uuid.UUID, str], str] = namespace["cache_key"]
    for image, user, kind in [
        (b"\xff\xd8\xff a photo", uuid.UUID(int=1), "glow"),
        (b"\xff\xd8\xff a photo", uuid.UUID(int=1), "style"),
        (b"\xff\xd8\xff a photo", uuid.UUID(int=2), "glow"),
        (b"", uuid.UUID(int=3), "glow"),
    ]:
        assert documented(image, user, kind) == cache_key(image, user, kind)
    # each part of the key changes it
    keys = {cache_key(b"a", uuid.UUID(int=1), "glow"), cache_key(b"b", uuid.UUID(int=1), "glow")}
    keys |= {cache_key(b"a", uuid.UUID(int=2), "glow"), cache_key(b"a", uuid.UUID(int=1), "style")}
    assert len(keys) == 4
