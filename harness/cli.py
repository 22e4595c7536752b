"""The `qkbench` command (also `python -m harness`): parses arguments and calls one step.

Exit codes: 0 all good · 1 the work finished but something is wrong (mismatch, error, crash,
timeout, oom) · 2 the request itself is wrong (one line on stderr, never a traceback) ·
130 interrupted (what finished is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from harness import config as config_module
from harness.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "default"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qkbench", description="Benchmark S = Q·Kᵀ on every backend here.")
    parser.add_argument("--version", action="version",
                        version=f"qkbench {__import__('harness').__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a sweep and write a run directory")
    run.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                     help="a YAML file, or the name of one in configs/ (default: default)")
    run.add_argument("--out", type=Path, help="write the run directory exactly here")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")

    validate = commands.add_parser("validate", help="check a config; print how many cells it has")
    validate.add_argument("config")

    commands.add_parser("backends", help="list backends and whether each can run here")
    commands.add_parser("env", help="print this machine's environment fingerprint (JSON)")

    peaks_parser = commands.add_parser(
        "peaks", help="measure this machine's compute peak per dtype and memory bandwidth")
    peaks_parser.add_argument("--remeasure", action="store_true",
                              help="measure again even when peaks are stored")
    return parser


def find_config(name: str) -> Path:
    """A path as given, else configs/NAME.yaml here or in the qkbench checkout."""
    given = Path(name)
    # os.path's tests, not Path's: they answer False instead of raising (a name too long).
    if os.path.exists(given) or given.suffix in (".yaml", ".yml") or "/" in name:
        return given
    for folder in (Path("configs"), REPO_CONFIGS):
        candidate = folder / f"{name}.yaml"
        if os.path.isfile(candidate):
            return candidate
    raise UsageError(f"no config named {name!r} (not a file, and no configs/{name}.yaml)")


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.sweep import expand, shapes

    path = find_config(args.config)
    config = config_module.load(path)
    specs = config_module.resolve_backends(config)
    cells = expand(config, [s.label for s in specs])
    print(f"{path}: valid — {len(cells)} cells ({len(specs)} backends × "
          f"{len(shapes(config))} shapes × {len(config.sweep.dtype)} dtypes)")
    return EXIT_OK


def cmd_backends(args: argparse.Namespace) -> int:
    from backends.registry import known_backends, load_class

    rows = []
    for name, path, origin in known_backends():
        try:
            cls = load_class(path)
            device, dtypes = cls.device, ",".join(cls.dtypes)
            reason = cls().unavailable() if not origin.startswith("plugin (ignored") else origin
            state = "available" if reason is None else f"unavailable: {reason}"
        except UsageError as exc:
            device, dtypes, state = "?", "?", f"broken: {exc}"
        except Exception as exc:  # a plugin's unavailable() or constructor raised
            device, dtypes, state = "?", "?", f"broken: {type(exc).__name__}: {exc}"
        rows.append((name, device, dtypes, origin, state))
    widths = [max(len(r[i]) for r in rows + [("backend", "device", "dtypes", "origin", "")])
              for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("backend", "device", "dtypes", "origin"), widths))
          + "  status")
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    return EXIT_OK


def cmd_env(args: argparse.Namespace) -> int:
    from harness.environment import fingerprint

    print(json.dumps(fingerprint(), indent=2))
    return EXIT_OK


def _run_folder(args: argparse.Namespace, config: config_module.Config) -> Path:
    if args.out is not None:
        folder = args.out
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = Path(config.output.dir) / f"{stamp}-{config.name}"
    # os.path.exists, not Path.exists: it answers False instead of raising (a name too long).
    if os.path.exists(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"run directory {folder} already exists and is not empty")
    return folder


def cmd_run(args: argparse.Namespace) -> int:
    path = find_config(args.config)
    config = config_module.load(path)
    specs = config_module.resolve_backends(config)
    folder = _run_folder(args, config)

    # Imported only once the request is known to be good: pandas and pyarrow double the time
    # it takes to refuse a bad one.
    from harness import peaks
    from harness.console import Progress, summary_table, time_split
    from harness.environment import fingerprint, last_level_cache_bytes
    from harness.results import RunWriter
    from harness.runner import Runner

    try:
        writer = RunWriter(folder)
    except OSError as exc:
        raise UsageError(f"cannot create run directory {folder}: {exc.strerror}") from None
    meta: dict[str, Any] = {
        "config_file": str(path), "config": config.model_dump(mode="json", warnings=False),
        "config_text": path.read_text(encoding="utf-8"),
        "backends": [{"label": s.label, "path": s.path, "origin": s.origin,
                      "options": dict(s.options)} for s in specs],
        "command": sys.argv, "environment": fingerprint(), "state": "running",
    }
    peaks_by_device, meta["environment"]["peaks"] = peaks.for_run(meta["environment"])
    writer.write_meta(meta)
    show = not (args.quiet or args.no_progress)
    runner = Runner(config, specs, writer, peaks=peaks_by_device,
                    host_cache_bytes=last_level_cache_bytes())
    progress = Progress(len(runner.cells()), config.name, enabled=show)
    runner.on_cell_done = progress.cell_done
    started = time.monotonic()
    interrupted = False
    try:
        counts = runner.run()
    except KeyboardInterrupt:
        interrupted = True
        counts = runner.counts
    finally:
        progress.close()
        finishing = time.monotonic()
        summary, _ = writer.finish()
        counts.spend("writing", time.monotonic() - finishing)
        wall_s = time.monotonic() - started
        meta.update(state="interrupted" if interrupted else "finished", wall_s=round(wall_s, 3),
                    cells_by_status=counts.by_status,
                    time_split_s={k: round(v, 3) for k, v in counts.seconds.items()})
        writer.write_meta(meta)
    if not args.quiet:
        print(summary_table(summary))
        print("\n" + time_split(wall_s, counts.seconds))
    print(f"\nrun directory: {folder}")
    if interrupted:
        print(f"interrupted: {len(summary)} finished cell(s) kept in {folder}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if counts.failed:
        print(f"{counts.failed} cell(s) failed: see the reasons above", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_peaks(args: argparse.Namespace) -> int:
    from harness import peaks
    from harness.environment import fingerprint

    environment = fingerprint()
    stored = peaks.load(environment["hardware_key"])
    if stored is not None and not args.remeasure:
        print(f"stored peaks for this machine (hardware key {environment['hardware_key']}; "
              "--remeasure to measure again):")
    else:
        print("measuring (a few seconds per precision)...", file=sys.stderr)
        stored = peaks.measure()
        path = peaks.save(environment["hardware_key"], stored)
        print(f"saved to {path} under hardware key {environment['hardware_key']}:")
    print(json.dumps(stored, indent=2))
    return EXIT_OK


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "backends": cmd_backends, "env": cmd_env,
            "peaks": cmd_peaks}


def _one_line(message: str) -> str:
    """Escape newlines and other control characters: a message quotes what the user wrote (a
    key, a file name), and that may hold a line break; the report must stay one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in message)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler's kill) ends a run as cleanly as Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"qkbench: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("qkbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
