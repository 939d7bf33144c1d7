"""jobrunner's built-in handler plugins, registered through the `jobrunner.handlers` entry point."""
