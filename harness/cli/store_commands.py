"""The command line, keeping a project's history: store add, store list, publish."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qkbench.cli.common import EXIT_OK, add_step_options
from qkbench.errors import UsageError


def add_parsers(commands: Any) -> None:
    store = commands.add_parser(
        "store", help="a results store: runs filed by machine and commit (add, list)")
    actions = store.add_subparsers(dest="store_command", required=True,
                                   parser_class=type(store))
    add = actions.add_parser("add", help="file run directories into a store")
    add.add_argument("paths", nargs="+", type=Path, metavar="RUN... STORE",
                     help="run directories (or folders holding them), then the store")
    add.set_defaults(handler=cmd_store_add)
    listing = actions.add_parser("list", help="what a store holds, per machine and commit")
    listing.add_argument("store", type=Path)
    listing.set_defaults(handler=cmd_store_list)

    publish = commands.add_parser(
        "publish", help="a static site of a store: charts per cell and machine, regressions")
    publish.add_argument("store", type=Path, metavar="STORE")
    publish.add_argument("--out", type=Path, required=True, metavar="SITE",
                         help="the folder the site is written to (open SITE/index.html)")
    publish.add_argument("--normalize-by", metavar="BACKEND",
                         help="also show each median relative to BACKEND's in the same run "
                              "(the default view; steps are found in it)")
    publish.add_argument("--commit-url", metavar="TEMPLATE",
                         help="link commits, e.g. https://github.com/ORG/REPO/commit/{commit}")
    add_step_options(publish)
    publish.set_defaults(handler=cmd_publish)


def store_runs(runs: list[Path], store: Path) -> int:
    """File runs into the store, one line each; the number newly added."""
    from qkbench.records.store import add

    added = 0
    for run in runs:
        entry, new = add(run, store)
        added += new
        where = entry.path.relative_to(store)
        print(f"{'stored' if new else 'already stored'}: {run} → {store}/{where}")
    return added


def cmd_store_add(args: argparse.Namespace) -> int:
    from qkbench.records.run import find_runs, is_run_dir

    if len(args.paths) < 2:
        raise UsageError("store add needs at least one run directory and the store: "
                         "qkbench store add RUN... STORE")
    *runs, store = args.paths
    if store.exists() and not store.is_dir():
        raise UsageError(f"the store {store} is not a folder")
    if is_run_dir(store):
        raise UsageError(f"{store} is a run directory; the last argument is the store: "
                         "qkbench store add RUN... STORE")
    added = store_runs(find_runs(runs), store)
    print(f"{added} run(s) added to {store}")
    return EXIT_OK


def cmd_store_list(args: argparse.Namespace) -> int:
    from qkbench.records.store import listing

    print(listing(args.store))
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from qkbench.cli.analysis_commands import parse_threshold
    from qkbench.present.publish import publish

    if args.min_runs < 1:
        raise UsageError("--min-runs must be at least 1")
    counts = publish(args.store, args.out, args.normalize_by, parse_threshold(args.threshold),
                     args.min_runs, args.commit_url, args.detector)
    print(f"published {counts['pages']} cell page(s) of {counts['runs']} run(s) on "
          f"{counts['machines']} machine(s), {counts['regressions']} open regression(s): "
          f"{args.out / 'index.html'}")
    return EXIT_OK
