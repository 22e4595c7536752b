"""The command line, showing runs: plot and report (and the figures at the end of a run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from qkbench.cli.common import EXIT_OK, one_line
from qkbench.records.run import check_run_dir


def add_parsers(commands: Any) -> None:
    plot = commands.add_parser(
        "plot", help="draw figures (PNG and SVG) of one run, or of several machines together")
    plot.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                      help="run directories; several are compared, labelled by machine")
    plot.add_argument("--out", type=Path, metavar="DIR",
                      help="where the figures go (default: the first RUN's figures/)")
    plot.add_argument("--baseline-backend", metavar="NAME",
                      help="the backend speedups are measured against (default: numpy)")

    plot.set_defaults(handler=cmd_plot)

    report = commands.add_parser(
        "report", help="write a self-contained HTML report and a Markdown summary")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="run directories; several are compared, labelled by machine")
    report.add_argument("--baseline", type=Path, metavar="RUN",
                        help="a run directory to compare with, cell by cell")
    report.add_argument("--out", type=Path, metavar="FILE",
                        help="the HTML file (default: the first RUN's report.html); the "
                             "Markdown summary goes next to it (.md)")
    report.add_argument("--between", nargs=2, metavar=("BASE", "CANDIDATE"),
                        help="the environments of the first RUN compared round by round "
                             "(default: its first two, when it has environments)")
    report.add_argument("--baseline-backend", metavar="NAME",
                        help="the backend speedups are measured against (default: numpy)")
    report.set_defaults(handler=cmd_report)


def _check_run_dirs(folders: list[Path]) -> None:
    """Refuse a missing run directory before matplotlib and pandas are imported."""
    for folder in folders:
        check_run_dir(folder)


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
                                     baseline_backend=args.baseline_backend,
                                     between=tuple(args.between) if args.between else None)
    print(f"report: {html_path}\nsummary: {markdown_path}")
    return EXIT_OK


def draw_run_figures(folder: Path, quiet: bool) -> None:
    """The default figures at the end of `qkbench run`. Drawing is a convenience on top of the
    tables: whatever goes wrong here is one warning line and never changes the exit code."""
    try:
        from qkbench.present.plots import plot_runs

        written, _ = plot_runs([folder])
    except (Exception, KeyboardInterrupt) as exc:
        print(f"qkbench: warning: figures not drawn: {one_line(str(exc) or type(exc).__name__)}",
              file=sys.stderr)
        return
    if written and not quiet:
        print(f"figures: {written[0].parent}")


