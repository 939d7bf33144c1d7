"""An example jobrunner plugin: the `greet` job type, its table and a daily schedule."""
