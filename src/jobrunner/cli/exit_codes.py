"""The exit codes every command shares (the CLI reference lists each command's)."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOTHING_TO_CANCEL = 3
