"""`% of peak` against the cores a cell's threads could use, and the figures' ceilings per
thread count (machines that share a peak share one label)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkbench.machine.cpu_peak import for_threads
from qkbench.present.figures.style import CLOSE_CEILINGS, compute_ceilings
from tests.conftest import run_cli, write_config


@settings(max_examples=300, deadline=None)
@given(peak=st.floats(1.0, 1e6), cores=st.integers(1, 512),
       threads=st.none() | st.integers(1, 2048))
def test_a_cells_peak_is_its_threads_share_of_the_machine_capped_by_the_cores(peak, cores,
                                                                               threads):
    got = for_threads(peak, threads, cores)
    if threads is None:
        assert got == peak  # unknown threads: the whole machine
    else:
        assert got == pytest.approx(peak * min(threads, cores) / cores)
        assert got <= peak * (1 + 1e-12)
        # One more thread never lowers the peak; the per-core peak is the same for all.
        assert for_threads(peak, threads + 1, cores) >= got
    assert for_threads(None, threads, cores) is None


def test_a_one_thread_cell_is_held_to_one_cores_peak(tmp_path):
    config = write_config(tmp_path, ["numpy"], n=[64], d_k=[32], threads=[1, 2])
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = pd.read_parquet(tmp_path / "run" / "summary.parquet")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    machine = meta["environment"]["peaks"]["cpu_physical"]["float32"]
    cores = machine["factors"]["cores"]["value"]
    assert cores == meta["environment"]["cpu"]["usable_cores"]
    whole = machine["gflops"]
    for _, row in summary.iterrows():
        used = min(int(row["threads"]), cores)
        assert row["peak_gflops"] == pytest.approx(whole * used / cores, rel=2e-3)
        assert row["pct_peak"] == pytest.approx(100 * row["gflops"] / row["peak_gflops"],
                                                rel=1e-9)


def _runs(rows: list[tuple[str, str, float | None, float]]) -> SimpleNamespace:
    frame = pd.DataFrame([{"machine": m, "device": d, "threads": t, "peak_gflops": p,
                           "dtype": "float32"} for m, d, t, p in rows])
    return SimpleNamespace(summary=frame)


def test_two_machines_with_the_same_peak_share_one_line_and_one_label():
    ceilings = compute_ceilings(_runs([("vm", "cpu", 2, 498.4), ("vm2", "cpu", 2, 498.4),
                                       ("vm", "cpu", 1, 249.2)]), "float32")
    assert [c.gflops for c in ceilings] == [249.2, 498.4]
    assert ceilings[0].text == "vm cpu · 1 thread: 249.2 GFLOP/s"
    # vm2 has one peak only: its thread count needs no naming.
    assert ceilings[1].text == "vm cpu · 2 threads; vm2 cpu: 498.4 GFLOP/s"
    same = compute_ceilings(_runs([("vm", "cpu", 2, 498.4), ("vm2", "cpu", 2, 498.4)]),
                            "float32")
    assert [c.text for c in same] == ["vm, vm2 cpu: 498.4 GFLOP/s"]


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["cpu", "gpu"]),
                               st.none() | st.integers(1, 8),
                               st.sampled_from([100.0, 110.0, 120.0, 200.0, 205.0, 800.0])),
                     min_size=1, max_size=12))
def test_ceiling_labels_never_overprint(rows):
    ceilings = compute_ceilings(_runs(rows), "float32")
    values = [c.gflops for c in ceilings]
    assert values == sorted(set(values))  # one line per distinct peak
    assert set(values) == {round(p, 1) for *_, p in rows}
    for low, high in zip(ceilings, ceilings[1:]):
        # Two close lines never both carry their labels on the same side.
        if high.gflops / low.gflops < CLOSE_CEILINGS:
            assert low.va != high.va
    for machine, *_ in rows:
        assert any(machine in c.text for c in ceilings)
