"""The app plugin's tests, importable as `handlers.tests` beside the core's `tests` (the plugin's wheel
holds jobrunner_handlers only)."""
