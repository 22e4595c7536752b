"""Before validation: a config file's bytes → plain YAML data, safely.

A safe loader only (no YAML tag can construct a Python object), duplicate keys refused rather
than silently overwritten, and a size cap, so a wrong path (/dev/zero, a pipe) is an error
instead of a read that never ends. Every failure is a `UsageError` naming the file and, where
YAML knows it, the line and column.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from qkbench.errors import UsageError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` is YAML's merge, handled by construct_mapping below
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            continue  # a list or mapping as a key: construct_mapping reports it with its line
        if key in seen:
            # A YAML error, so that it is reported like the others: file, line and column.
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


MAX_CONFIG_BYTES = 1 << 20


def read_yaml(path: Path) -> Any:
    # Ask for forgiveness: Path.exists() itself raises on some paths (a name too long).
    try:
        # Opened without blocking, then held to a regular file: opening a FIFO with no writer
        # would wait forever, and a device (/dev/zero) or a socket is never a config.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                raise UsageError(f"config path is not a regular file ({_file_kind(mode)}): "
                                 f"{path}")
            # A config is a page of text; a huge file is a wrong path, not a sweep.
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UsageError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; "
                             "is this really a config file?")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"config path is a directory, not a file: {path}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    return parse_yaml_text(text, str(path))


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, in the words of `ls -l`'s first letter."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file"


def parse_yaml_text(text: str, path: str) -> Any:
    """YAML text → plain data, safely (no tags that build objects); errors name `path`."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no object tags
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise UsageError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}: invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
