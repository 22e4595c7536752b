"""The command line, making runs: run, validate, backends, env, merge, peaks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from qkbench.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from qkbench.cli.figure_commands import draw_run_figures
from qkbench.errors import UsageError
from qkbench.plan import config as config_module
from qkbench.plan.locate import DEFAULT_CONFIG, find_config


def add_parsers(commands: Any) -> None:
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
    run.add_argument("--env", action="append", default=[], metavar="NAME=PYTHON",
                     help="run every backend in this environment's interpreter too, "
                          "interleaved round by round (repeatable; two or more)")
    run.add_argument("--store", type=Path, metavar="STORE",
                     help="also file the finished run in this results store (see 'store')")

    run.set_defaults(handler=cmd_run)

    validate = commands.add_parser("validate", help="check a config; print how many cells it has")
    validate.add_argument("config")
    validate.set_defaults(handler=cmd_validate)

    commands.add_parser("backends", help="list backends and whether each can run here"
                        ).set_defaults(handler=cmd_backends)
    commands.add_parser("env", help="print this machine's environment fingerprint (JSON)"
                        ).set_defaults(handler=cmd_env)

    merge = commands.add_parser("merge", help="join the shards of one sweep into one run")
    merge.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    merge.add_argument("--out", type=Path, required=True, help="the merged run directory")
    merge.set_defaults(handler=cmd_merge)

    peaks_parser = commands.add_parser(
        "peaks", help="measure this machine's compute peak per dtype and memory bandwidth")
    peaks_parser.add_argument("--remeasure", action="store_true",
                              help="measure again even when peaks are stored")
    peaks_parser.set_defaults(handler=cmd_peaks)


def cmd_validate(args: argparse.Namespace) -> int:
    from qkbench.plan.sweep import above_size_limit, expand, shapes, size_limits, variants

    path = find_config(args.config)
    config = config_module.load(path)
    specs = config_module.resolve_backends(config)
    cells = expand(config, [s.label for s in specs])
    limits = size_limits(config, specs)
    above = sum(1 for cell in cells
                if above_size_limit(limits, cell.backend, cell.shape.flops))
    # A variant is one (dtype, phase, cache, threads) combination.
    environments = (f" × {len(config.environments)} environments"
                    if config.environments else "")
    print(f"{path}: valid — {len(cells)} cells ({len(specs)} backends{environments} × "
          f"{len(shapes(config))} shapes × {len(variants(config))} variants)"
          + (f"; {above} above a backend's max_gflop, to be skipped" if above else ""))
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

    facts = fingerprint()
    print(json.dumps(facts, indent=2))
    for warning in facts["library_env_warnings"]:
        print(warning, file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from qkbench.api import RunSession

    if args.resume is not None:
        if args.config is not None or args.out is not None or args.env:
            raise UsageError("--resume takes the config, its environments and the folder from "
                             "the run directory; give no config, --out nor --env")
        session = RunSession.resumed(args.resume, args.shard)
    else:
        source = args.config or DEFAULT_CONFIG
        overrides = {}
        if args.env:
            from qkbench.api import load_config

            overrides["environments"] = config_module.with_environments(load_config(source),
                                                                        args.env)
        session = RunSession.new(source, args.out, args.shard, overrides)

    # Imported only once the request is known to be good: pandas and pyarrow double the time
    # it takes to refuse a bad one.
    from qkbench.analysis import crossover
    from qkbench.present.console import (
        contention_note,
        machine_check_note,
        quota_note,
        summary_table,
        time_split,
    )
    from qkbench.records.results import FAILED_STATUSES

    run = session.execute(progress=not (args.quiet or args.no_progress))
    summary, folder = run.summary, run.path
    if not args.quiet:
        print(summary_table(summary))
        gpu_over_cpu = crossover.describe(summary)
        if gpu_over_cpu:
            print("\n" + gpu_over_cpu)
        print("\n" + time_split(session.wall_s, session.seconds))
    for note in (contention_note(summary), machine_check_note(summary),
                 quota_note(summary, run.meta),
                 *(run.environment.get("library_env_warnings") or [])):
        if note:
            print("\n" + note, file=sys.stderr)
    print(f"\nrun directory: {folder}")
    if not (session.interrupted or args.no_plots):
        draw_run_figures(folder, args.quiet)
    if session.interrupted:
        print(f"interrupted: {len(summary)} finished cell(s) kept in {folder}; "
              f"finish it with: qkbench run --resume {folder}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.store is not None:
        from qkbench.cli.store_commands import store_runs

        store_runs([folder], args.store)
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
    unfinished = [str(index) for index in meta["missing_shards"]] + [
        f"{(shard['shard'] or {}).get('index')} ({shard['state']})"
        for shard in meta["merged_from"] if shard["state"] != "finished"]
    if unfinished:
        print(f"shard(s) absent or unfinished: {', '.join(unfinished)} (resume them, then "
              "merge again)", file=sys.stderr)
    return EXIT_FAILED if missing or meta["state"] != "finished" else EXIT_OK


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



