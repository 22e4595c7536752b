"""From a run's summary: how much faster the GPU is than the CPU, and from which size on.

For each shape family — rows with the same dtype, phase, cache state, d_k, either m = n
(self-attention) or one fixed m, and the same attention axes (batch, heads, kv_heads, causal,
scaled, preset: one model's heads are never mixed with another's) — and each n, the speedup is the best CPU backend's median over
the best GPU backend's median. The crossover is the smallest n from which the GPU wins at that
size and at every larger size of the family: a lone win at a size where timings happen to be
noisy is not a crossover. Computed separately for kernel-only and end-to-end time, since
transfers move the crossover a long way.
"""

from __future__ import annotations

import pandas as pd

from qkbench.cell_key import ATTENTION_AXES, KEY_DEFAULTS

FAMILY = ["dtype", "phase", "cache", "d_k", "m_rule", *ATTENTION_AXES]


def speedups(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, n): best CPU and GPU backend, their medians, GPU speedup."""
    columns = FAMILY + ["n", "cpu_backend", "cpu_median_s", "gpu_backend", "gpu_median_s",
                        "speedup"]
    ok = summary[(summary["status"] == "ok") & summary["median_s"].notna()].copy()
    if ok.empty or not {"cpu", "gpu"} <= set(ok["device"]):
        return pd.DataFrame(columns=columns)
    ok["m_rule"] = ["m=n" if m == n else f"m={m}" for n, m in zip(ok["n"], ok["m"])]
    for column in ATTENTION_AXES:  # a table from before these columns: the 2-D product
        if column not in ok:
            ok[column] = KEY_DEFAULTS[column]
    # No preset is "" here, not NA: NA is never equal to NA in a join on the family.
    ok["preset"] = ok["preset"].astype("object").where(ok["preset"].notna(), "").astype(str)
    rows = []
    for key, group in ok.groupby(FAMILY + ["n"], dropna=False):
        best = {}
        for device in ("cpu", "gpu"):
            side = group[group["device"] == device]
            if not side.empty:
                best[device] = side.loc[side["median_s"].idxmin()]
        if len(best) < 2:
            continue
        rows.append({**dict(zip(FAMILY + ["n"], key)),
                     "cpu_backend": best["cpu"]["backend"],
                     "cpu_median_s": best["cpu"]["median_s"],
                     "gpu_backend": best["gpu"]["backend"],
                     "gpu_median_s": best["gpu"]["median_s"],
                     "speedup": best["cpu"]["median_s"] / best["gpu"]["median_s"]})
    # No rows when CPU and GPU share no shape (say, the GPU ran only float16).
    return pd.DataFrame(rows, columns=columns).sort_values(FAMILY + ["n"]).reset_index(drop=True)


def crossovers(table: pd.DataFrame) -> pd.DataFrame:
    """Per family: the crossover n (NA when the GPU does not win at the largest size), and
    the speedup at the smallest and largest n."""
    rows = []
    for key, family in table.groupby(FAMILY, dropna=False):
        family = family.sort_values("n")
        wins = (family["speedup"] > 1.0).tolist()
        crossover = pd.NA
        for i in range(len(wins)):
            if all(wins[i:]):
                crossover = int(family["n"].iloc[i])
                break
        rows.append({**dict(zip(FAMILY, key)), "crossover_n": crossover,
                     "sizes": len(family),
                     "speedup_smallest": float(family["speedup"].iloc[0]),
                     "speedup_largest": float(family["speedup"].iloc[-1])})
    columns = FAMILY + ["crossover_n", "sizes", "speedup_smallest", "speedup_largest"]
    return pd.DataFrame(rows, columns=columns)


def describe(summary: pd.DataFrame) -> str:
    """The crossover table as text for the terminal, or '' when the run lacks CPU or GPU."""
    table = crossovers(speedups(summary))
    if table.empty:
        return ""
    lines = ["GPU over CPU (best backend of each side), per shape family:"]
    for row in table.itertuples():
        where = (f"GPU wins from n = {row.crossover_n}" if not pd.isna(row.crossover_n)
                 else "GPU does not win at the largest size")
        lines.append(f"  {row.dtype} {row.phase} {row.cache} d_k={row.d_k} {row.m_rule}"
                     f"{attention_words(row)}: "
                     f"{where}; speedup {row.speedup_smallest:.2g}x at the smallest n, "
                     f"{row.speedup_largest:.2g}x at the largest")
    return "\n".join(lines)


def attention_words(row: object) -> str:
    """' llama-3-8b causal', ' H=8/2 B=4 scaled', ...: a row's attention axes, '' for the 2-D
    product. `row` is a mapping (a dict, a pandas row) or a named tuple."""
    def field(name: str, default: object) -> object:
        getter = getattr(row, "get", None)
        value = getter(name, default) if callable(getter) else getattr(row, name, default)
        missing = value is None or (not isinstance(value, str) and bool(pd.isna(value)))
        return default if missing else value

    words = []
    preset, heads, kv_heads = field("preset", ""), field("heads", 1), field("kv_heads", 1)
    if preset:
        words.append(str(preset))
    elif (heads, kv_heads) != (1, 1):
        words.append(f"H={heads}/{kv_heads}")
    if field("batch", 1) != 1:
        words.append(f"B={field('batch', 1)}")
    words += [flag for flag in ("causal", "scaled") if bool(field(flag, False))]
    return "".join(f" {word}" for word in words)
