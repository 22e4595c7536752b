"""What a person sees in the terminal: a progress bar while cells run, a summary table after.

Times are stored in seconds; only here are they printed in a unit that suits them.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd
from tqdm import tqdm

from qkbench.analysis.crossover import attention_words
from qkbench.cell_key import CELL_KEY, KEY_DEFAULTS, OPTIONAL_AXES
from qkbench.machine.contention import BUSY_CORES
from qkbench.measure.timing import MIN_FIT_SAMPLES
from qkbench.units import format_seconds


class Progress:
    """A progress bar with ETA over the cells of a run (on stderr, so stdout stays clean)."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self._bar = tqdm(total=total, desc=label, unit="cell", file=sys.stderr,
                         disable=not enabled, dynamic_ncols=True)

    def cell_done(self, row: dict[str, Any]) -> None:
        self._bar.set_postfix_str(f"{row['backend']} {row['dtype']} n={row['n']} m={row['m']} "
                                  f"d_k={row['d_k']}{attention_words(row)}: {row['status']}",
                                  refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def time_split(wall_s: float, seconds: dict[str, float]) -> str:
    """Where a run's wall time went, largest share first; the rest is messaging and bookkeeping."""
    parts = sorted(seconds.items(), key=lambda item: -item[1])
    other = max(0.0, wall_s - sum(seconds.values()))
    shown = ", ".join(f"{name} {value:.1f} s ({100 * value / wall_s:.0f}%)"
                      for name, value in parts + [("other", other)] if wall_s > 0)
    return f"wall time {wall_s:.1f} s: {shown}"


def contention_note(summary: pd.DataFrame) -> str:
    """A warning when other processes were busy while cells sampled (see qkbench.machine.contention)."""
    if "foreign_load" not in summary:
        return ""
    load = pd.to_numeric(summary.loc[summary["status"] == "ok", "foreign_load"],
                         errors="coerce").dropna()
    busy = load[load > BUSY_CORES]
    if busy.empty:
        return ""
    return (f"warning: other processes kept {busy.median():.2f} cores busy (up to "
            f"{busy.max():.2f}) while {len(busy)} of {len(load)} ok cell(s) sampled "
            "(column foreign_load): their times, and the ratios between multi-threaded "
            "backends, include that contention; rerun them on a quiet machine to compare.")


def machine_check_note(summary: pd.DataFrame) -> str:
    """A line on the rounds set aside — for causes the OS reported (qkbench.machine.os_causes)
    or by the machine check (qkbench.machine.canary) — on groups the check could not judge,
    and on cells left short of samples; or ''."""
    if "unfit_share" not in summary:
        return ""
    ok = summary[summary["status"] == "ok"]
    share = pd.to_numeric(ok["unfit_share"], errors="coerce").fillna(0.0)
    hit = share[share > 0]
    notes = []
    if not hit.empty:
        # A cell with too few kept samples reports all of them (SamplingResult.measured), so
        # its `samples` is then the total, and the kept ones are that share of it.
        kept = pd.to_numeric(ok["samples"], errors="coerce") * (1.0 - share)
        unkept = int(((share > 0) & (kept < MIN_FIT_SAMPLES - 1e-9)).sum())
        causes = ok.get("set_aside_causes", pd.Series([""] * len(ok), index=ok.index))
        named = causes.fillna("").astype(str)
        by_cause = {name: int(named.str.contains(name).sum()) for name in ("throttled", "steal")}
        why = ", ".join(f"{name} in {count}" for name, count in by_cause.items() if count)
        note = (f"note: rounds were set aside in {len(hit)} of {len(ok)} ok cell(s) "
                f"(a median {hit.median():.0%} of their samples; column unfit_share)"
                + (f"; causes the OS reported: {why} (column set_aside_causes)" if why else "")
                + "; the rest by the machine check, which saw the machine lose part of its "
                "parallel capacity. Those samples are not in the figures.")
        if unkept:
            note += (f" {unkept} cell(s) kept fewer than {MIN_FIT_SAMPLES} samples and report "
                     "all of theirs: rerun them on a quieter machine to trust them.")
        notes.append(note)
    if "machine_check" in ok:
        gave_up = ok["machine_check"].fillna("").astype(str).str.startswith("cannot judge")
        if gave_up.any():
            notes.append(f"note: the machine check could not judge this machine in "
                         f"{int(gave_up.sum())} ok cell(s): it would have set aside most of "
                         "their rounds with no cause the OS reports, so every round was kept "
                         "(column machine_check).")
        stopped = ok["machine_check"].fillna("").astype(str).str.startswith("stopped after")
        if stopped.any():
            notes.append(f"note: the machine check stopped early in {int(stopped.sum())} ok "
                         "cell(s): it cost more than half the time of the rounds it guarded, "
                         "so their later rounds were all kept (column machine_check).")
    reasons = ok["reason"] if "reason" in ok else pd.Series([""] * len(ok), index=ok.index)
    short = reasons.fillna("").astype(str).str.startswith("unconverged")
    if short.any():
        notes.append(f"note: {int(short.sum())} ok cell(s) have fewer kept samples than "
                     "min_samples after sampling up to their cap; their reason says why.")
    return "\n".join(notes)


def quota_note(summary: pd.DataFrame, meta: dict[str, Any]) -> str:
    """A line when cells ran more threads than the cgroup's CPU quota gives cores (column
    quota_measured): their times measure the quota, not the hardware; or ''."""
    if "quota_measured" not in summary:
        return ""
    hit = summary[summary["quota_measured"].fillna(False).astype(bool)]
    if hit.empty:
        return ""
    cpu = (meta.get("environment") or {}).get("cpu") or {}
    threads = sorted({int(t) for t in pd.to_numeric(hit["threads"], errors="coerce").dropna()})
    return (f"note: {len(hit)} cell(s) ran {'/'.join(map(str, threads)) or 'more'} thread(s) "
            f"under a CPU quota of {cpu.get('quota_cores', '?')} core(s) "
            f"({cpu.get('quota_source', 'unknown')}; {cpu.get('usable_cores', '?')} usable): "
            "their times measure the quota, not the hardware (column quota_measured).")


def _varying(summary: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if c in summary and summary[c].astype(str).nunique() > 1]


def _pct_peak_text(pct: object, above: object) -> str:
    if above is True or (not pd.isna(above) and bool(above)):
        return "ABOVE PEAK"  # faster than the physical limit: a measuring fault (above_peak)
    return "-" if pd.isna(pct) else f"{pct:.0f}%"


def summary_table(summary: pd.DataFrame) -> str:
    """The summary as a readable text table, followed by the reason of every cell not ok."""
    if summary.empty:
        return "(no cells)"
    # Axes a sweep did not vary (phase, cache, threads) would only repeat one value per row.
    axes = {c: summary[c] for c in _varying(summary, OPTIONAL_AXES)}
    view = pd.DataFrame({
        **{axis: summary[axis] for axis in CELL_KEY if axis not in KEY_DEFAULTS}, **axes,
        "status": summary["status"],
        "median": summary["median_s"].map(format_seconds),
        "±95%": summary["rel_ci"].map(lambda r: "-" if pd.isna(r) else f"{100 * r:.1f}%"),
        "GFLOP/s": summary["gflops"].map(lambda g: "-" if pd.isna(g) else f"{g:.3g}"),
        "% peak": [_pct_peak_text(p, above) for p, above in
                   zip(summary["pct_peak"], summary.get("above_peak",
                                                         pd.Series([None] * len(summary))))],
        "first call": summary["first_call_s"].map(format_seconds),
        "samples": summary["samples"],
        "max err/bound": [
            "-" if pd.isna(e) or pd.isna(b) or b == 0 else f"{e / b:.2g}"
            for e, b in zip(summary["max_err"], summary["err_bound"])],
    })
    lines = [view.to_string(index=False)]
    not_converged = summary[(summary["status"] == "ok") & ~summary["converged"]]
    if len(not_converged):
        lines.append(f"\n{len(not_converged)} ok cell(s) stopped before reaching the precision "
                     "target (budget or sample limit): their interval is wider than asked.")
    problems = summary[summary["status"] != "ok"]
    if len(problems):
        lines.append("\nCells not timed:")
        for _, row in problems.iterrows():
            lines.append(f"  {row['backend']} {row['dtype']} n={row['n']} m={row['m']} "
                         f"d_k={row['d_k']}{attention_words(row)}: {row['status']} — "
                         f"{row['reason']}")
    return "\n".join(lines)
