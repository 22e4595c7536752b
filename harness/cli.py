"""The `qkbench` command (also `python -m qkbench`): parses arguments, calls the API, prints.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

# Importing qkbench has already quieted this process's idle thread pools, before NumPy loads.
from qkbench.errors import UsageError
from qkbench.plan import config as config_module
from qkbench.plan.locate import DEFAULT_CONFIG, find_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qkbench", description="Benchmark S = Q·Kᵀ on every backend here.")
    parser.add_argument("--version", action="version",
                        version=f"qkbench {__import__('qkbench').__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a sweep and write a run directory")
    run.add_argument("config", nargs="?", default=None,
                     help="a YAML file, or the name of one in configs/ (default: default)")
    run.add_argument("--out", type=Path, help="write the run directory exactly here")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="finish an interrupted run: only its missing cells are run")
    run.add_argument("--shard", metavar="I/N",
                     help="run only part I of N of the sweep (merge the parts with 'merge')")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")
    run.add_argument("--no-plots", action="store_true",
                     help="draw no figures at the end (default: RUN_DIR/figures/)")

    validate = commands.add_parser("validate", help="check a config; print how many cells it has")
    validate.add_argument("config")

    commands.add_parser("backends", help="list backends and whether each can run here")
    commands.add_parser("env", help="print this machine's environment fingerprint (JSON)")

    merge = commands.add_parser("merge", help="join the shards of one sweep into one run")
    merge.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    merge.add_argument("--out", type=Path, required=True, help="the merged run directory")

    peaks_parser = commands.add_parser(
        "peaks", help="measure this machine's compute peak per dtype and memory bandwidth")
    peaks_parser.add_argument("--remeasure", action="store_true",
                              help="measure again even when peaks are stored")

    compare = commands.add_parser(
        "compare", help="compare two run directories: slower, faster or same, per cell")
    compare.add_argument("baseline", type=Path,
                         help="a run directory, or a folder of runs of one config (pooled)")
    compare.add_argument("candidate", type=Path, help="the same, for the code under test")
    compare.add_argument("--threshold", default="0.1", metavar="T",
                         help="smallest change that counts: 0.1 or 10%% (default 0.1)")
    compare.add_argument("--threshold-for", action="append", default=[], metavar="BACKEND=T",
                         help="another threshold for one backend (repeatable)")
    compare.add_argument("--normalize-by", metavar="BACKEND",
                         help="divide each sample by BACKEND's time in the same interleaving "
                              "round before comparing (cancels machine drift)")
    compare.add_argument("--allow-different-machines", action="store_true",
                         help="compare runs whose hardware or library versions differ")
    compare.add_argument("--markdown", type=Path, metavar="FILE", help="also write Markdown")
    compare.add_argument("--json", type=Path, metavar="FILE", help="also write JSON")

    history = commands.add_parser(
        "history", help="runs of one config over time: a table, trend plots, lasting changes")
    history.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                         help="run directories, or folders holding them (e.g. results/)")
    history.add_argument("--out", type=Path, default=Path("history"),
                         help="where history.csv and the plots go (default: ./history)")
    history.add_argument("--config", metavar="NAME", help="only the runs of this config")
    history.add_argument("--normalize-by", metavar="BACKEND",
                         help="track each median relative to BACKEND's in the same run")
    history.add_argument("--threshold", default="0.1", metavar="T",
                         help="smallest lasting change reported (default 0.1)")
    history.add_argument("--min-runs", type=int, default=3, metavar="K",
                         help="runs needed on each side of a step (default 3)")
    history.add_argument("--no-plots", action="store_true", help="write no trend plots")

    plot = commands.add_parser(
        "plot", help="draw figures (PNG and SVG) of one run, or of several machines together")
    plot.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                      help="run directories; several are compared, labelled by machine")
    plot.add_argument("--out", type=Path, metavar="DIR",
                      help="where the figures go (default: the first RUN's figures/)")
    plot.add_argument("--baseline-backend", metavar="NAME",
                      help="the backend speedups are measured against (default: numpy)")

    report = commands.add_parser(
        "report", help="write a self-contained HTML report and a Markdown summary")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="run directories; several are compared, labelled by machine")
    report.add_argument("--baseline", type=Path, metavar="RUN",
                        help="a run directory to compare with, cell by cell")
    report.add_argument("--out", type=Path, metavar="FILE",
                        help="the HTML file (default: the first RUN's report.html); the "
                             "Markdown summary goes next to it (.md)")
    report.add_argument("--baseline-backend", metavar="NAME",
                        help="the backend speedups are measured against (default: numpy)")
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    from qkbench.plan.sweep import expand, shapes, variants

    path = find_config(args.config)
    config = config_module.load(path)
    specs = config_module.resolve_backends(config)
    cells = expand(config, [s.label for s in specs])
    # A variant is one (dtype, phase, cache, threads) combination.
    print(f"{path}: valid — {len(cells)} cells ({len(specs)} backends × "
          f"{len(shapes(config))} shapes × {len(variants(config))} variants)")
    return EXIT_OK


def cmd_backends(args: argparse.Namespace) -> int:
    from qkbench.backends.registry import known_backends, load_class

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
    from qkbench.machine.environment import fingerprint

    print(json.dumps(fingerprint(), indent=2))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from qkbench.api import RunSession

    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise UsageError("--resume takes the config and the folder from the run directory; "
                             "give neither a config nor --out")
        session = RunSession.resumed(args.resume, args.shard)
    else:
        session = RunSession.new(args.config or DEFAULT_CONFIG, args.out, args.shard)

    # Imported only once the request is known to be good: pandas and pyarrow double the time
    # it takes to refuse a bad one.
    from qkbench.analysis import crossover
    from qkbench.present.console import contention_note, machine_check_note, summary_table, time_split
    from qkbench.records.results import FAILED_STATUSES

    run = session.execute(progress=not (args.quiet or args.no_progress))
    summary, folder = run.summary, run.path
    if not args.quiet:
        print(summary_table(summary))
        gpu_over_cpu = crossover.describe(summary)
        if gpu_over_cpu:
            print("\n" + gpu_over_cpu)
        print("\n" + time_split(session.wall_s, session.seconds))
    for note in (contention_note(summary), machine_check_note(summary)):
        if note:
            print("\n" + note, file=sys.stderr)
    print(f"\nrun directory: {folder}")
    if not (session.interrupted or args.no_plots):
        _draw_run_figures(folder, args.quiet)
    if session.interrupted:
        print(f"interrupted: {len(summary)} finished cell(s) kept in {folder}; "
              f"finish it with: qkbench run --resume {folder}", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = int(summary["status"].isin(FAILED_STATUSES).sum())
    if failed:
        print(f"{failed} cell(s) failed: see the reasons above", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from qkbench.records.merge import merge

    meta, cells, missing = merge(args.runs, args.out)
    print(f"merged {len(args.runs)} shard(s), {cells} cells, into {args.out}")
    if missing:
        shown = "; ".join(missing[:5]) + ("; ..." if len(missing) > 5 else "")
        print(f"{len(missing)} cell(s) of the sweep are in no shard: {shown}", file=sys.stderr)
        return EXIT_FAILED
    if meta["state"] != "finished":
        print("some shards were interrupted (resume them, then merge again)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_peaks(args: argparse.Namespace) -> int:
    from qkbench.machine import peaks
    from qkbench.machine.environment import fingerprint

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
    _, record = peaks.for_run(environment)
    print("physical CPU peaks (what percent-of-peak is against), GFLOP/s = product of:")
    for precision, ceiling in record["cpu_physical"].items():
        print(f"  {precision}: {ceiling['gflops']}")
        for name, factor in ceiling["factors"].items():
            print(f"    {name} = {factor['value']:g}  ({factor['how_found']})")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from qkbench.analysis.compare import run_command

    return run_command(args)


def cmd_history(args: argparse.Namespace) -> int:
    from qkbench.analysis.history import run_command

    return run_command(args)


def _check_run_dirs(folders: list[Path]) -> None:
    """Refuse a missing run directory before matplotlib and pandas are imported."""
    for folder in folders:
        if not os.path.isdir(folder):
            raise UsageError(f"run directory not found: {folder}")
        if not os.path.isfile(folder / "summary.parquet"):
            raise UsageError(f"{folder} is not a finished run directory (no summary.parquet)")


def cmd_plot(args: argparse.Namespace) -> int:
    _check_run_dirs(args.runs)
    from qkbench.present.plots import plot_runs

    written, skipped = plot_runs(args.runs, out=args.out, baseline_backend=args.baseline_backend)
    if written:
        print(f"{len(written)} file(s) in {written[0].parent}: "
              + ", ".join(sorted({p.stem for p in written})))
    else:
        print("no figure drawn: the runs have no cell the figures could show")
    for name, why in skipped.items():
        print(f"not drawn: {name} ({why})")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    _check_run_dirs(args.runs + ([args.baseline] if args.baseline is not None else []))
    from qkbench.present.report import write

    html_path, markdown_path = write(args.runs, baseline=args.baseline, out=args.out,
                                     baseline_backend=args.baseline_backend)
    print(f"report: {html_path}\nsummary: {markdown_path}")
    return EXIT_OK


def _draw_run_figures(folder: Path, quiet: bool) -> None:
    """The default figures at the end of `qkbench run`. Drawing is a convenience on top of the
    tables: whatever goes wrong here is one warning line and never changes the exit code."""
    try:
        from qkbench.present.plots import plot_runs

        written, _ = plot_runs([folder])
    except (Exception, KeyboardInterrupt) as exc:
        print(f"qkbench: warning: figures not drawn: {_one_line(str(exc) or type(exc).__name__)}",
              file=sys.stderr)
        return
    if written and not quiet:
        print(f"figures: {written[0].parent}")


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "backends": cmd_backends, "env": cmd_env,
            "merge": cmd_merge,
            "peaks": cmd_peaks, "compare": cmd_compare, "history": cmd_history,
            "plot": cmd_plot, "report": cmd_report}


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
