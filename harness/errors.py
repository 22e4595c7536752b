"""The one error type that means "the request itself is wrong" (exit code 2)."""


class UsageError(Exception):
    """Bad config, bad flag, missing file: reported as one line, exit code 2, no traceback."""
