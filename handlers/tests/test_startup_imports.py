"""Loading the plugin's handlers (what every `jobrunner run` does at start) imports neither the
OpenAI SDK nor Pillow nor httpx: each loads with the first job that needs it (the SDKs through
deferred_import, httpx where a Storage or Expo request is made), so a replica does not wait
for them before its first claim. The handlers' own tests run those jobs through the real
daemon."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO_ROOT

LOADED_BY_THEIR_FIRST_JOB = ("openai", "PIL", "httpx")


def test_the_plugins_handlers_load_without_their_sdks() -> None:
    script = (
        "import json, sys\n"
        "from jobrunner.registry import HandlerRegistry\n"
        "registry = HandlerRegistry.discover()\n"
        "print(json.dumps({'job_types': registry.job_types(), 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert {"analyze_image", "process_upload"} <= set(loaded["job_types"])
    assert not [name for name in loaded["modules"] if name.split(".")[0] in LOADED_BY_THEIR_FIRST_JOB]
