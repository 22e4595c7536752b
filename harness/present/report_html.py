"""Presentation, the report as one self-contained HTML file: inline styles, figures embedded
as base64 PNG, no script and nothing from the network, so it can be mailed, archived as a CI
artifact or opened years later."""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING, Any

import pandas as pd
from qkbench.version import __version__
from qkbench.present import plots
from qkbench.present.figures import style
from qkbench.present.report_facts import (
    VERDICTS,
    counts_text,
    fastest,
    format_ci,
    format_number,
    format_rel,
    machine_facts,
    problems,
    shape_text,
    sort_cells,
    variant_words,
)
from qkbench.records.record import FAILED_STATUSES
from qkbench.units import format_seconds

if TYPE_CHECKING:
    from qkbench.present.report_facts import Report


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1380px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:4px 0 2px}h2{font-size:20px;margin:34px 0 8px;padding-top:6px;
  border-top:1px solid #e3e6eb}h3{font-size:16px;margin:20px 0 6px}
.sub{color:#5b6373;margin:0 0 14px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{border:1px solid #dde1e7;border-radius:8px;padding:10px 14px;min-width:220px;flex:1}
.card b{display:block;font-size:13px;color:#5b6373;font-weight:600}
.card span{font-size:18px}
.alert{border-left:4px solid #c62828;background:#fdecea;padding:8px 12px;border-radius:4px}
.note{border-left:4px solid #9aa3b2;background:#f1f3f6;padding:8px 12px;border-radius:4px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{padding:3px 7px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top;
  white-space:nowrap}
td.wrap{white-space:normal;min-width:18em}
th{background:#f1f3f6;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.failed td{background:#fdecea}tr.skipped td{color:#8a93a3}
tr.slower td.verdict{color:#c62828;font-weight:600}tr.faster td.verdict{color:#2e7d32;font-weight:600}
.best{font-weight:700}
figure{margin:18px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #eceef2}
figcaption{color:#3d4452;font-size:14px;margin-top:4px}
.machines th{position:static}.machines td{white-space:normal}
.scroll{overflow-x:auto}
code{background:#f1f3f6;padding:0 3px;border-radius:3px}
footer{color:#7a8291;font-size:12px;margin-top:40px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[tuple[str, bool]], rows: list[tuple[str, list[tuple[str, str]]]],
           css: str = "") -> str:
    """headers: (text, numeric?); rows: (row class, [(cell html, cell class)])."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if num else f"<th>{_e(h)}</th>"
                   for h, num in headers)
    body = []
    for row_class, cells in rows:
        tds = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for v, c in cells)
        body.append(f'<tr class="{row_class}">{tds}</tr>' if row_class else f"<tr>{tds}</tr>")
    cls = f' class="{css}"' if css else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def render_html(report: Report) -> str:
    runs = report.runs
    names = sorted({run.config_name for run in runs.runs if run.config_name})
    title = f"qkbench report: {', '.join(names) or 'run'}"
    machines = ", ".join(run.label for run in runs.runs)
    parts = [f"<h1>{_e(title)}</h1>",
             f'<p class="sub">S = Q·Kᵀ on {_e(machines)} · {_e(counts_text(runs.summary))}</p>']
    parts.append(_glance_html(report))
    parts.append(_machines_html(runs))
    parts.append(_figures_html(report))
    if report.baseline is not None:
        parts.append(_comparison_html(report))
    if report.paired is not None:  # compare --between's own table, one rendering
        parts.append('<section id="paired"><h2>Environments compared round by round</h2>'
                     f"<pre>{_e(report.paired.to_text())}</pre></section>")
    parts.append(_problems_html(runs))
    parts.append(_summary_html(runs))
    folders = ", ".join(str(run.folder) for run in runs.runs)
    parts.append(f"<footer>Made by qkbench {_e(__version__)} on {_e(report.created)} "
                 f"from {_e(folders)}"
                 + (f", baseline {_e(report.baseline.runs[0].folder)}" if report.baseline else "")
                 + ". Times are medians of many calls with the 95% confidence interval of the "
                 "median (order statistics). Self-contained: no network needed.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")


def _glance_html(report: Report) -> str:
    runs = report.runs
    out = ['<section id="at-a-glance"><h2>At a glance</h2>']
    failed = runs.summary[runs.summary["status"].isin(FAILED_STATUSES)]
    if len(failed):
        out.append(f'<p class="alert"><b>{len(failed)} cell(s) failed</b> '
                   f"({_e(counts_text(failed).split(': ', 1)[1])}): see "
                   '<a href="#problems">failed and skipped cells</a>. Their backends computed '
                   "a wrong S or did not finish; no time is reported for them.</p>")
    unconverged = runs.ok[~runs.ok["converged"]]
    if len(unconverged):
        out.append(f'<p class="note">{len(unconverged)} of {len(runs.ok)} ok cells stopped '
                   "before reaching the precision target (time budget or sample limit): their "
                   "intervals are wider than asked. The noisiest are shown below.</p>")
    best = fastest(runs)
    cards = []
    for _, row in best.iterrows():
        where = f" on {row['machine']}" if len(runs.runs) > 1 else ""
        words = variant_words(row)
        cards.append(
            f'<div class="card"><b>fastest at {_e(shape_text(row))} · {_e(row["dtype"])}'
            f"{_e(' · ' + words if words else '')}{_e(where)}</b>"
            f"<span>{_e(row['backend'])}: {_e(format_seconds(row['median_s']))}</span> "
            f"({_e(format_number(row['gflops']))} GFLOP/s"
            + _peak_words(row) + ")</div>")
    if cards:
        out.append('<div class="cards">' + "".join(cards[:12]) + "</div>")
    crossing = plots.crossovers(plots.gpu_cpu_speedup(runs))
    if not crossing.empty:
        items = []
        for _, row in crossing.iterrows():
            items.append(f"<li>{_e(row['group'])} · {_e(row['dtype'])} · d_k={row['d_k']}"
                         + (f" · {_e(row['m_rule'])}" if row["m_rule"] != "m=n" else "")
                         + f" · {_e(style.PHASE_WORDS.get(row['phase'], row['phase']))}"
                         + (f" · {_e(row['cache'])} cache" if row["cache"] != "warm" else "")
                         + f": <b>{_e(plots.crossover_words(row))}</b> "
                         f"({format_number(row['speedup_largest'])}× at n = "
                         f"{int(row['largest_n'])})</li>")
        out.append("<h3>GPU over CPU: crossover</h3><p>The smallest n from which the best GPU "
                   "backend is faster than the best CPU backend at every larger size too.</p>"
                   "<ul>" + "".join(items) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def _machines_html(runs: plots.RunSet) -> str:
    facts = [machine_facts(run) for run in runs.runs]
    labels = list(dict.fromkeys(label for f in facts for label in f))
    headers = [("", False)] + [(run.host, False) for run in runs.runs]
    rows = [("", [(f"<b>{_e(label)}</b>", "")] + [(_e(f.get(label, "-")), "") for f in facts])
            for label in labels]
    heading = "Machine" if len(runs.runs) == 1 else "Machines"
    return (f'<section id="machines"><h2>{heading}</h2>'
            + _table(headers, rows, css="machines") + "</section>")


def _figures_html(report: Report) -> str:
    figures = report.figures
    out = ['<section id="figures"><h2>Figures</h2>']
    for name, fig in figures.figures.items():
        data = base64.b64encode(plots.render(fig, "png")).decode("ascii")
        caption = figures.caption(name)
        out.append(f'<figure id="figure-{_e(name)}"><img alt="{_e(caption)}" '
                   f'src="data:image/png;base64,{data}"><figcaption>{_e(caption)}'
                   "</figcaption></figure>")
    if figures.skipped:
        items = "".join(f"<li><code>{_e(name)}</code>: {_e(why)}</li>"
                        for name, why in figures.skipped.items())
        out.append(f'<p class="note">Not drawn, because the data does not allow it:</p>'
                   f"<ul>{items}</ul>")
    out.append("</section>")
    return "\n".join(out)


def _summary_html(runs: plots.RunSet) -> str:
    out = ['<section id="summary"><h2>All cells</h2>',
           ("<p>Median time per call with its 95% confidence interval; the fastest backend of "
            "each shape is in bold. ‡: stopped before reaching the precision target.</p>")]
    summary = runs.summary
    variants = style.Variants.of(summary) if len(summary) else None
    show_variant = bool(variants and variants.columns)
    peak = (summary["peak_gflops"] > 0).any()
    headers = [("backend", False), ("device", False), ("dtype", False), ("n", True),
               ("m", True), ("d_k", True)]
    headers += [("variant", False)] if show_variant else []
    headers += [("status", False), ("median", True), ("95% CI", True), ("±", True),
                ("GFLOP/s", True)]
    headers += [("% of peak", True)] if peak else []
    headers += [("first call", True), ("samples × calls", True), ("max err / bound", True)]
    for run in runs.runs:
        frame = sort_cells(summary[summary["machine"] == run.host], runs.machines)
        best = _best_index(frame)
        rows = []
        for index, row in frame.iterrows():
            ok = row["status"] == "ok"
            median = _e(format_seconds(row["median_s"])) + ("" if row["converged"] or not ok
                                                          else " ‡")
            cells = [(_e(row["backend"]), ""), (_e(row["device"]), ""), (_e(row["dtype"]), ""),
                     (_e(row["n"]), "num"), (_e(row["m"]), "num"), (_e(row["d_k"]), "num")]
            cells += [(_e(", ".join(style.variant_word_list(row, variants.columns,
                                                         all_words=True)) or "-"), "")] \
                if show_variant and variants is not None else []
            cells += [(_e(row["status"]), ""),
                      (median, "num best" if index in best else "num"),
                      (_e(format_ci(row)), "num"), (_e(format_rel(row["rel_ci"])), "num"),
                      (_e(format_number(row["gflops"])) if ok else "-", "num")]
            if peak:
                cells.append((_e(_pct_peak(row)) if ok else "-", "num"))
            samples = (f"{int(row['samples'])} × {int(row['calls_per_sample'])}"
                       if ok and pd.notna(row["samples"]) and pd.notna(row["calls_per_sample"])
                       else "-")
            error = ("-" if pd.isna(row["max_err"]) or pd.isna(row["err_bound"])
                     or row["err_bound"] == 0 else f"{row['max_err'] / row['err_bound']:.2g}")
            cells += [(_e(format_seconds(row["first_call_s"])), "num"), (_e(samples), "num"),
                      (_e(error), "num")]
            css = "failed" if row["status"] in FAILED_STATUSES else \
                "skipped" if row["status"] == "skipped" else ""
            rows.append((css, cells))
        if len(runs.runs) > 1:
            out.append(f"<h3>{_e(run.label)}</h3>")
        out.append(_table(headers, rows))
    out.append("</section>")
    return "\n".join(out)


def _best_index(frame: pd.DataFrame) -> set[Any]:
    ok = frame[(frame["status"] == "ok") & (frame["median_s"] > 0)]
    if ok.empty:
        return set()
    keys = ["machine", "dtype", "n", "m", "d_k", "phase", "cache", "threads_key"]
    return set(ok.groupby(keys, sort=False)["median_s"].idxmin())


def _problems_html(runs: plots.RunSet) -> str:
    failed, skipped = problems(runs)
    out = ['<section id="problems"><h2>Failed and skipped cells</h2>']
    many = len(runs.runs) > 1
    if failed.empty and skipped.empty:
        out.append("<p>None: every cell ran and agreed with the float64 reference.</p>")
    if not failed.empty:
        out.append(f"<h3>Failed ({len(failed)})</h3><p>The run's exit code was 1 because of "
                   "these. <code>mismatch</code>: the backend's S disagreed with the float64 "
                   "reference beyond the error bound (the reason names which answer: first "
                   "call, timed call or fresh inputs); <code>tampered</code>: it changed its "
                   "inputs in place; <code>unsynced</code>: its work was not inside the timed "
                   "call and sync(); <code>implausible</code>: its median was faster than the "
                   "machine can compute or move the data. None of these cells' times is shown "
                   "(docs/correctness.md).</p>")
        headers = ([("machine", False)] if many else []) + [
            ("backend", False), ("dtype", False), ("shape", False), ("status", False),
            ("reason", False)]
        rows = [("failed", ([(_e(r["machine"]), "")] if many else []) + [
            (_e(r["backend"]), ""), (_e(r["dtype"]) + _e(" · " + variant_words(r)
                                                          if variant_words(r) else ""), ""),
            (_e(shape_text(r)), ""), (f"<b>{_e(r['status'])}</b>", ""),
            (_e(r["reason"]), "wrap")])
            for _, r in failed.iterrows()]
        out.append(_table(headers, rows))
    if not skipped.empty:
        out.append(f"<h3>Skipped ({int(skipped['cells'].sum())})</h3><p>Could not run on this "
                   "machine; not a failure.</p>")
        headers = ([("machine", False)] if many else []) + [
            ("backend", False), ("cells", True), ("which", False), ("reason", False)]
        rows = [("skipped", ([(_e(r["machine"]), "")] if many else []) + [
            (_e(r["backend"]), ""), (_e(r["cells"]), "num"), (_e(r["which"]), ""),
            (_e(r["reason"]), "wrap")]) for _, r in skipped.iterrows()]
        out.append(_table(headers, rows))
    out.append("</section>")
    return "\n".join(out)


def _comparison_html(report: Report) -> str:
    assert report.baseline is not None
    base = report.baseline.runs[0]
    table = report.comparison
    out = ['<section id="comparison"><h2>Compared with the baseline</h2>',
           (f"<p>Baseline: <code>{_e(base.folder)}</code> on {_e(base.label)}. Ratio = this "
            "run's median / the baseline's (above 1: slower now). The verdict is "
            f"<code>qkbench compare</code>'s: {_e(report.rule.describe())}.</p>")]
    if table.empty:
        out.append('<p class="note">No cell is ok in both the baseline and the run(s): '
                   "nothing to compare (different backends, shapes or dtypes?).</p>")
        out.append("</section>")
        return "\n".join(out)
    verdicts = table["verdict"].value_counts()
    out.append("<p>" + " · ".join(f"{int(verdicts.get(v, 0))} {v}" for v in VERDICTS)
               + "</p>")
    many = len(report.runs.runs) > 1
    headers = ([("machine", False)] if many else []) + [
        ("backend", False), ("dtype", False), ("shape", False), ("baseline", True),
        ("this run", True), ("ratio", True), ("", False)]
    rows = []
    for _, r in table.iterrows():
        words = variant_words(r)
        rows.append((r["verdict"].replace(" ", "-"), ([(_e(r["machine"]), "")] if many else [])
                     + [(_e(r["backend"]), ""),
                        (_e(r["dtype"]) + _e(" · " + words if words else ""), ""),
                        (_e(shape_text(r)), ""),
                        (_e(format_seconds(r["baseline_s"])), "num"),
                        (_e(format_seconds(r["median_s"])), "num"),
                        (_e(f"{r['ratio']:.3g}×"), "num"), (_e(r["verdict"]), "verdict")]))
    out.append(_table(headers, rows))
    out.append("</section>")
    return "\n".join(out)


def _pct_peak(row: Any) -> str:
    """The row's pct_peak, never recomputed: a row above the physical peak is a measuring
    fault (records leave its pct_peak empty and set above_peak), shown as such."""
    above = row.get("above_peak")
    if above is not None and not pd.isna(above) and bool(above):
        return "above peak"
    return "-" if pd.isna(row.get("pct_peak")) else format_number(row["pct_peak"], 2)


def _peak_words(row: Any) -> str:
    text = _pct_peak(row)
    return "" if text == "-" else (f", {text}" if text == "above peak" else f", {text}% of peak")
