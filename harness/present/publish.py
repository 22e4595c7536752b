"""A results store → a static site that opens from disk (`qkbench publish`).

    SITE/index.html            configs × machines: each cell's newest value, open regressions
    SITE/cells/<cell>.html     one chart per config and cell, every machine on it
    SITE/regressions.html      open slowdown steps, newest first
    SITE/regressions.json      the same, for machines
    SITE/regressions.xml       the same, as an Atom feed
    SITE/qkbench-chart.js, SITE/style.css   shared by every page (no network, no library)

The chart is a small hand-written SVG script rather than a charting library: a page stays a
few tens of kilobytes with hundreds of runs, the site needs no extra package, and it draws
the same from file:// in any browser. Each page carries its data inline as JSON.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qkbench.analysis.history import DEFAULT_DETECTOR, MIN_RUNS, STEP_THRESHOLD
from qkbench.errors import UsageError
from qkbench.present.runset import machine_hardware
from qkbench.present.site_data import CellPage, Regression, build
from qkbench.units import value_text

ASSETS = Path(__file__).resolve().parent / "site"
SHARED_FILES = ("qkbench-chart.js", "style.css")


def publish(store: Path, out: Path, normalize_by: str | None = None,
            threshold: float = STEP_THRESHOLD, min_runs: int = MIN_RUNS,
            commit_url: str | None = None, detector: str = DEFAULT_DETECTOR) -> dict[str, Any]:
    """Write the site; returns counts (pages, runs, machines, regressions) for the caller."""
    if commit_url is not None and "{commit}" not in commit_url:
        raise UsageError(f"--commit-url {commit_url!r} has no {{commit}} to fill in")
    pages, regressions, machines = build(store, normalize_by, threshold, min_runs, detector)
    labels = {name: _machine_label(name, facts) for name, facts in machines.items()}
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        for name in SHARED_FILES:
            shutil.copyfile(ASSETS / name, out / name)
        for page in pages:
            _write(out / "cells" / f"{page.slug}.html",
                   _cell_page(page, regressions, labels, normalize_by, commit_url))
        _write(out / "index.html", _index(pages, regressions, labels, normalize_by, generated))
        _write(out / "regressions.html",
               _regressions_page(regressions, labels, commit_url, normalize_by, generated))
        _write(out / "regressions.json", json.dumps(
            {"generated_utc": generated, "normalize_by": normalize_by, "threshold": threshold,
             "regressions": [asdict(r) | {"change": r.change} for r in regressions]},
            indent=2) + "\n")
        _write(out / "regressions.xml", _atom(regressions, labels, generated))
    except OSError as exc:
        raise UsageError(f"cannot write the site to {out}: {exc.strerror or exc}") from None
    runs = {p["run"] + s.machine for page in pages for s in page.series for p in s.points}
    return {"pages": len(pages), "runs": len(runs), "machines": len(machines),
            "regressions": len(regressions)}


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _machine_label(name: str, facts: dict[str, Any]) -> str:
    hardware = machine_hardware({"environment": facts}) or name
    return f"{hardware} · {str(facts.get('comparability_key') or name)[:8]}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _frame(title: str, body: str, root: str = "") -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title>"
            f'<link rel="stylesheet" href="{root}style.css"></head>\n<body>\n'
            f'<nav><a href="{root}index.html">all cells</a> · '
            f'<a href="{root}regressions.html">regressions</a></nav>\n{body}\n</body></html>\n')


def _value(value: float | None, normalised: bool) -> str:
    return "—" if value is None else value_text(value, normalised)


def _cell_page(page: CellPage, regressions: Sequence[Regression], labels: dict[str, str],
               normalize_by: str | None, commit_url: str | None) -> str:
    data = {"title": page.title, "config": page.config, "normalize_by": normalize_by,
            "commit_url": commit_url,
            "series": [{"machine": s.machine, "label": labels.get(s.machine, s.machine),
                        "points": s.points, "steps": s.steps} for s in page.series]}
    # `</` inside a JSON string would end the script element early.
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    mine = [r for r in regressions if r.config == page.config and r.cell == page.title]
    rows = "".join(f"<li>{_e(labels.get(r.machine, r.machine))}: {100 * r.change:+.1f}% "
                   f"from commit {_commit(r.commit, commit_url)} ({_e(r.created_utc)})</li>"
                   for r in mine)
    runs = sum(len(s.points) for s in page.series)
    body = (f"<h1>{_e(page.title)}</h1>\n<p class=\"qk-sub\">config {_e(page.config)} · "
            f"{len(page.series)} machine(s) · {runs} run(s) · median and 95% interval per run; "
            "drag to zoom, double-click to zoom out</p>\n"
            '<div id="qk-controls" class="qk-controls"></div>\n'
            '<div id="qk-chart" class="qk-chart"></div>\n'
            + (f"<h2>open regressions</h2><ul class=\"qk-open\">{rows}</ul>\n" if rows else "")
            + f'<script id="qk-data" type="application/json">{payload}</script>\n'
            '<script src="../qkbench-chart.js"></script>')
    return _frame(f"{page.title} · {page.config}", body, root="../")


def _commit(commit: str, commit_url: str | None) -> str:
    if not commit_url or commit in ("", "no-commit"):
        return f"<code>{_e(commit)}</code>"
    url = commit_url.replace("{commit}", commit.removesuffix("-dirty"))
    return f'<a href="{_e(url)}"><code>{_e(commit)}</code></a>'


def _index(pages: Sequence[CellPage], regressions: Sequence[Regression], labels: dict[str, str],
           normalize_by: str | None, generated: str) -> str:
    open_at = {(r.config, r.cell, r.machine): r for r in regressions}
    parts = [f"<h1>qkbench results</h1>\n<p class=\"qk-sub\">{len(pages)} cell(s) · "
             f"{len(regressions)} open regression(s) · values "
             + (f"normalised by {_e(normalize_by)}" if normalize_by else "in seconds")
             + f" · published {_e(generated)}</p>"]
    for config in dict.fromkeys(p.config for p in pages):
        mine = [p for p in pages if p.config == config]
        machines = sorted({s.machine for p in mine for s in p.series})
        head = "".join(f'<th title="{_e(m)}">{_e(labels.get(m, m))}</th>' for m in machines)
        rows = []
        for page in mine:
            by_machine = {s.machine: s for s in page.series}
            cells = []
            for machine in machines:
                series = by_machine.get(machine)
                if series is None:
                    cells.append("<td></td>")
                    continue
                key = "vn" if normalize_by else "v"
                values = [p[key] for p in series.points if p.get(key)]
                text = _value(values[-1] if values else None, normalize_by is not None)
                regression = open_at.get((config, page.title, machine))
                badge = (f' <span class="qk-badge">▲ {100 * regression.change:+.0f}%</span>'
                         if regression else "")
                cells.append(f'<td><a href="cells/{page.slug}.html">{_e(text)}</a>{badge}'
                             f' <small>({len(series.points)})</small></td>')
            rows.append(f"<tr><th><a href=\"cells/{page.slug}.html\">{_e(page.title)}</a></th>"
                        + "".join(cells) + "</tr>")
        parts.append(f"<h2>config {_e(config)}</h2>\n<table class=\"qk-grid-table\"><thead>"
                     f"<tr><th>cell (newest value, runs)</th>{head}</tr></thead><tbody>"
                     + "\n".join(rows) + "</tbody></table>")
    return _frame("qkbench results", "\n".join(parts))


def _regressions_page(regressions: Sequence[Regression], labels: dict[str, str],
                      commit_url: str | None, normalize_by: str | None, generated: str) -> str:
    rows = "".join(
        f"<tr class=\"qk-regression\"><td>{_e(r.created_utc)}</td><td>{_e(r.config)}</td>"
        f"<td><a href=\"{_e(r.page)}\">{_e(r.cell)}</a></td>"
        f"<td>{_e(labels.get(r.machine, r.machine))}</td><td>{_commit(r.commit, commit_url)}</td>"
        f"<td class=\"qk-change\">{100 * r.change:+.1f}%</td>"
        f"<td>{_e(_value(r.before, r.view == 'norm'))} → {_e(_value(r.after, r.view == 'norm'))}"
        "</td></tr>\n" for r in regressions)
    body = ("<h1>open regressions</h1>\n<p class=\"qk-sub\">lasting slowdowns not yet undone, "
            "newest first · " + (f"normalised by {_e(normalize_by)}" if normalize_by
                                 else "raw times")
            + f" · published {_e(generated)} · <a href=\"regressions.json\">JSON</a> · "
            "<a href=\"regressions.xml\">Atom feed</a></p>\n"
            + ("<table class=\"qk-grid-table\"><thead><tr><th>from run of</th><th>config</th>"
               "<th>cell</th><th>machine</th><th>commit</th><th>change</th><th>before → after"
               f"</th></tr></thead><tbody>\n{rows}</tbody></table>" if regressions
               else "<p>none: no lasting slowdown is open.</p>"))
    return _frame("qkbench regressions", body)


def _atom(regressions: Sequence[Regression], labels: dict[str, str], generated: str) -> str:
    from xml.sax.saxutils import escape

    entries = []
    for r in regressions:
        title = (f"{r.config}: {r.cell} {100 * r.change:+.1f}% on "
                 f"{labels.get(r.machine, r.machine)} from commit {r.commit}")
        entries.append(
            f"<entry><title>{escape(title)}</title>"
            f"<id>urn:qkbench:{escape(r.config)}:{escape(r.machine)}:{escape(r.run)}:"
            f"{escape(r.cell).replace(' ', '_')}</id>"
            f"<updated>{escape(r.created_utc or generated)}</updated>"
            f"<link href=\"{escape(r.page)}\"/><summary>{escape(title)}</summary></entry>")
    return ('<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>qkbench regressions</title><id>urn:qkbench:regressions</id>"
            f"<updated>{escape(generated)}</updated>" + "".join(entries) + "</feed>\n")
