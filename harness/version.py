"""qkbench's version, on the ground floor: every step that records or checks it reads it here,
never from the top-level package (which sits above them all)."""

__version__ = "0.2.0"
