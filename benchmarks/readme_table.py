"""The README's "What you get" table and figure, from the committed run they quote.

    python benchmarks/readme_table.py            # check: exit 1 when the README is stale
    python benchmarks/readme_table.py --write    # rewrite the table and docs/throughput.png

The README marks the table with the run directory it comes from:

    <!-- what-you-get: results/reference/<run> d_k=64 -->
    | dtype | d_k | n | m | ... |
    <!-- end what-you-get -->

The rows are `qkbench report`'s Markdown table of that run (median per call, fastest in bold),
those of the one d_k named in the marker. tests/test_readme.py checks that the README holds
exactly them, so a README table never outlives the run it quotes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
FIGURE = REPO / "docs" / "throughput.png"
MARKER = re.compile(r"<!-- what-you-get: (?P<run>\S+) d_k=(?P<d_k>\d+) -->\n(?P<table>.*?)"
                    r"<!-- end what-you-get -->", re.S)


def quoted(readme: str = "") -> tuple[Path, int, str]:
    """(the run directory the README quotes, its d_k, the table as the README has it)."""
    found = MARKER.search(readme or README.read_text(encoding="utf-8"))
    if found is None:
        raise SystemExit("README.md has no <!-- what-you-get: RUN d_k=N --> table")
    return REPO / found["run"], int(found["d_k"]), found["table"]


def table(run: Path, d_k: int) -> str:
    """The README's table: the report's Markdown rows of the run with that d_k."""
    from qkbench.present.report_markdown import _markdown_table
    from qkbench.present.runset import load_runs

    lines = _markdown_table(load_runs([run]))
    rows = [line for line in lines if line.startswith("|")]
    header, rule, body = rows[0], rows[1], rows[2:]
    d_k_column = [cell.strip() for cell in header.strip("|").split("|")].index("d_k")
    kept = [row for row in body
            if row.strip("|").split("|")[d_k_column].strip() == str(d_k)]
    return "\n".join([header, rule, *kept]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true",
                        help="rewrite the README's table and docs/throughput.png")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    run, d_k, current = quoted(readme)
    fresh = table(run, d_k)
    if not args.write:
        if fresh != current:
            print(f"README.md's table does not match {run}: run with --write", file=sys.stderr)
            return 1
        return 0
    found = MARKER.search(readme)
    assert found is not None
    README.write_text(readme[:found.start("table")] + fresh + readme[found.end("table"):],
                      encoding="utf-8")
    shutil.copyfile(run / "figures" / "throughput.png", FIGURE)
    print(f"README.md table and {FIGURE.relative_to(REPO)} from {run.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
