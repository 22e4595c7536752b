"""Attention cells: batch × heads, grouped key heads, causal masks, the scale, model presets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import qkbench
from qkbench.backends.base import Problem
from qkbench.errors import UsageError
from qkbench.measure import agreement, inputs, resources
from qkbench.plan import config as config_module
from qkbench.plan import presets
from qkbench.plan.sweep import Cell, Shape, Variant, shapes
from qkbench.records import results
from qkbench.cell_key import CellKey
from tests.conftest import FAST_TIMING, run_cli, write_config

PLUGINS = "tests.plugins.attention"
CPU_BACKENDS = ["numpy", "numba-loops", "numba", "torch-cpu"]
# Whether each cell is `ok` and counted right is what these runs check, not its precision: six
# samples a cell (the sweep of every backend has 64 cells).
TIMING = {**FAST_TIMING, "processes": 1, "machine_check": False, "max_samples": 6}


def run(tmp_path, sweep, backends, name="run"):
    mapping = {"name": "attention-test", "sweep": sweep, "backends": backends, "timing": TIMING}
    return qkbench.run(mapping, out=tmp_path / name).summary


# ------------------------------------------------------------------ semantics, by hand


def test_flops_count_unmasked_entries_checked_by_hand():
    # n = 3 queries, m = 5 keys, causal bottom-right: query i sees keys 0 … i + 2, so the
    # rows see 3, 4 and 5 keys: 12 of 15 entries per head.
    shape = Shape(3, 5, 4, batch=2, heads=4, kv_heads=2, causal=True)
    assert shape.flops == 2 * 2 * 4 * 4 * 12 == 768
    assert Shape(3, 5, 4, batch=2, heads=4, kv_heads=2).flops == 2 * 2 * 4 * 4 * 15 == 960
    # n = m: the lower triangle with its diagonal, n(n + 1)/2 entries.
    assert Shape(4, 4, 8, causal=True).flops == 2 * 8 * 10
    assert Shape(1000, 1000, 64, causal=True).flops == 2 * 64 * 1000 * 1001 // 2
    # The plain product is what it always was.
    assert Shape(7, 9, 3).flops == 2 * 7 * 9 * 3


def test_mask_is_bottom_right_aligned():
    masked = Problem(2, 4, 1, causal=True).masked()
    # query 0 sees keys 0..2, query 1 sees all four.
    assert masked.tolist() == [[False, False, False, True], [False, False, False, False]]
    assert np.array_equal(Problem(3, 3, 1, causal=True).masked(), np.triu(np.ones((3, 3), bool), 1))


def test_bytes_count_each_key_head_once():
    cell = Cell.of("numpy", Shape(16, 64, 8, batch=2, heads=8, kv_heads=2), Variant("float32"))
    q, k, s = 2 * 8 * 16 * 8, 2 * 2 * 64 * 8, 2 * 8 * 16 * 64
    assert results.min_bytes(cell) == 4 * (q + k + s)


def test_memory_guard_counts_every_head_of_s():
    shape = Shape(100, 200, 16, batch=3, heads=8, kv_heads=4)
    plain = Shape(100, 200, 16)
    extra = resources.cell_bytes(shape, "float32", 1, 1 << 30) \
        - resources.cell_bytes(plain, "float32", 1, 1 << 30)
    # two outputs of B·H·n·m entries, two input copies, the float64 check arrays
    assert extra >= 2 * 4 * (3 * 8 - 1) * 100 * 200


# ------------------------------------------------------------------ reference and agreement


def attention_inputs(max_elements=1 << 24, **axes):
    problem = Problem(**{"n": 5, "m": 11, "d_k": 8, "batch": 2, "heads": 6, "kv_heads": 2,
                         **axes})
    built = inputs.build(problem.n, problem.m, problem.d_k, 0, max_elements, problem)
    return problem, built


def grouped_product(problem, q, k):
    heads = [problem.key_head(h) for h in range(problem.heads)]
    s = q @ np.take(k, heads, axis=1).swapaxes(-1, -2) * problem.scale
    s[..., problem.masked()] = -np.inf
    return s


def test_reference_holds_mask_and_scale():
    problem, built = attention_inputs(causal=True, scaled=True)
    assert built.q.shape == (2, 6, 5, 8) and built.k.shape == (2, 2, 11, 8)
    expected = grouped_product(problem, built.q, built.k).reshape(-1, 11)
    assert np.array_equal(np.isinf(built.reference.values), np.isinf(expected))
    finite = np.isfinite(expected)
    assert np.allclose(built.reference.values[finite], expected[finite], rtol=1e-14)


@pytest.mark.parametrize("causal, scaled", [(False, False), (True, True)])
def test_correct_output_passes_and_wrong_heads_fail(causal, scaled):
    problem, built = attention_inputs(causal=causal, scaled=scaled)
    q, k = built.q.astype(np.float32), built.k.astype(np.float32)
    s = grouped_product(problem, q, k)
    assert agreement.compare(s, built.reference, "float32").passed
    interleaved = q @ np.take(k, [h % 2 for h in range(6)], axis=1).swapaxes(-1, -2)
    interleaved = interleaved * np.float32(problem.scale)
    interleaved[..., problem.masked()] = -np.inf
    verdict = agreement.compare(interleaved, built.reference, "float32")
    assert not verdict.passed and "worst at S[" in verdict.reason


def test_masked_entries_must_be_minus_inf_and_nan_never_passes():
    problem, built = attention_inputs(causal=True)
    s = grouped_product(problem, built.q.astype(np.float32), built.k.astype(np.float32))
    leaky = s.copy()
    leaky[1, 3, 0, 10] = 0.0  # a masked entry (query 0 sees keys 0..6)
    reason = agreement.compare(leaky, built.reference, "float32").reason
    assert reason and "masked entries are not -inf" in reason and "S[1, 3, 0, 10]" in reason
    nan = s.copy()
    nan[0, 0, 4, 0] = np.nan  # an unmasked entry
    assert "non-finite" in agreement.compare(nan, built.reference, "float32").reason


def test_too_large_reference_samples_batch_head_rows_and_still_catches_a_wrong_one():
    problem, built = attention_inputs(max_elements=11 * 20)
    rows = built.reference.rows
    assert len(rows) == 20 and np.all(np.diff(rows) > 0)
    assert len(set(rows // problem.n)) > 6  # rows of many (batch, head) pairs, not one
    s = grouped_product(problem, built.q.astype(np.float32), built.k.astype(np.float32))
    assert agreement.compare(s, built.reference, "float32").passed
    b, h, i = np.unravel_index(int(rows[7]), (2, 6, 5))
    s[b, h, i] *= 1.01
    assert not agreement.compare(s, built.reference, "float32").passed


# ------------------------------------------------------------------ config and presets


def parse(**sweep):
    return config_module.parse({"name": "t", "sweep": sweep, "backends": ["numpy"]})


def test_without_the_new_axes_a_config_is_the_plain_product():
    (shape,) = shapes(parse(n=[8], d_k=[4]))
    assert shape == Shape(8, 8, 4) and shape.problem().plain


def test_kv_heads_defaults_to_heads_and_presets_set_the_heads():
    assert [(s.heads, s.kv_heads) for s in shapes(parse(n=[8], d_k=[4], heads=[2, 4]))] == \
        [(2, 2), (4, 4)]
    found = shapes(parse(n=[8], preset=["llama-3-8b", "gemma-2-9b"]))
    assert [(s.preset, s.heads, s.kv_heads, s.d_k) for s in found] == \
        [("llama-3-8b", 32, 8, 128), ("gemma-2-9b", 16, 8, 256)]


def test_tokens_sets_the_batch_per_sequence_length():
    found = shapes(parse(n=[512, 1024, 32768], d_k=[4], tokens=16384))
    assert [(s.n, s.batch) for s in found] == [(512, 32), (1024, 16), (32768, 1)]
    with pytest.raises(UsageError, match="remove batch or tokens"):
        parse(n=[8], d_k=[4], tokens=64, batch=[2])


def test_the_issue_table_of_presets():
    table = {name: (p.heads, p.kv_heads, p.d_k) for name, p in presets.PRESETS.items()}
    assert table == {"gpt-2": (12, 12, 64), "llama-3-8b": (32, 8, 128),
                     "llama-3-70b": (64, 8, 128), "mistral-7b": (32, 8, 128),
                     "qwen2.5-7b": (28, 4, 128), "gemma-2-9b": (16, 8, 256)}


@pytest.mark.parametrize("sweep, message", [
    ({"n": [8], "preset": ["gpt-2"], "d_k": [64]}, "preset sets heads, kv_heads and d_k"),
    ({"n": [8], "preset": ["gpt-2"], "kv_heads": 2}, "remove kv_heads or the preset"),
    ({"n": [8], "preset": ["gpt-3"]}, "unknown preset 'gpt-3' (known: gemma-2-9b, gpt-2,"),
    ({"n": [8], "d_k": [4], "heads": [8], "kv_heads": [3]}, "kv_heads 3 does not divide heads 8"),
    ({"n": [8], "d_k": [4], "kv_heads": [2]}, "kv_heads 2 does not divide heads 1"),
    ({"n": [16], "m": [8], "d_k": [4], "causal": True}, "causal needs n ≤ m"),
    ({"n": [8]}, "sweep.d_k: required (or a preset"),
    ({"n": [8], "d_k": [4], "causal": "yes"}, "expected true, false or a list of them"),
])
def test_bad_combinations_are_refused_in_one_line(sweep, message):
    with pytest.raises(UsageError) as caught:
        parse(**sweep)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_combination_exits_2_from_the_cli(tmp_path):
    path = write_config(tmp_path, ["numpy"], heads=[8], kv_heads=[3])
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "kv_heads 3 does not divide heads 8" in result.stderr
    assert "Traceback" not in result.stderr


def test_rows_of_older_runs_load_as_the_plain_product():
    old = pd.DataFrame([{"backend": "numpy", "dtype": "float32", "n": 8, "m": 8, "d_k": 4,
                         "status": "ok", "median_s": 1e-6}])
    frame = results.typed_summary(old)
    row = frame.iloc[0]
    assert (row["batch"], row["heads"], row["kv_heads"]) == (1, 1, 1)
    assert row["causal"] is np.False_ or row["causal"] is False
    assert not row["scaled"] and pd.isna(row["preset"])
    old_log_row = {"backend": "numpy", "dtype": "float32", "n": 8, "m": 8, "d_k": 4,
                   "phase": "kernel", "cache": "warm", "threads_requested": None}
    cell = Cell.of("numpy", Shape(8, 8, 4), Variant("float32"))
    assert CellKey.of(old_log_row) == cell.key


# ------------------------------------------------------------------ whole runs


AWKWARD = {"n": [5], "m": [13], "d_k": [7], "batch": [2], "heads": [6], "kv_heads": [2, 6],
           "causal": [False, True], "scaled": [False, True], "dtype": ["float32", "float64"]}


def test_every_builtin_cpu_backend_is_ok_on_awkward_sizes(tmp_path):
    summary = run(tmp_path, AWKWARD, CPU_BACKENDS)
    assert len(summary) == 4 * 2 * 2 * 2 * 2
    bad = summary[summary["status"] != "ok"]
    assert bad.empty, bad[["backend", "kv_heads", "causal", "scaled", "dtype", "reason"]]
    # flops by hand: 2·B·H·d_k per unmasked entry; causal rows see 9, 10, 11, 12, 13 keys.
    expected = {False: 2 * 2 * 6 * 7 * 5 * 13, True: 2 * 2 * 6 * 7 * (9 + 10 + 11 + 12 + 13)}
    assert (summary["flops"] == summary["causal"].map(expected)).all()
    grouped = summary[summary["kv_heads"] == 2]
    assert (grouped["kv_materialised"] == False).all()  # noqa: E712 (a nullable column)
    assert summary.loc[summary["kv_heads"] == 6, "kv_materialised"].isna().all()


def test_causal_cells_with_more_rows_than_the_checked_subset_are_ok(tmp_path):
    # B·H·n = 320 rows of S: more than the rows another worker checks in a timed call's answer
    # (cell.SOME_ROWS), whose subset once lost the mask and read the −inf entries as NaN/Inf.
    sweep = {"n": [40], "m": [40, 72], "d_k": [8], "batch": [2], "heads": [4],
             "kv_heads": [2], "causal": [True], "scaled": [True], "dtype": ["float32"]}
    mapping = {"name": "causal-rows", "sweep": sweep, "backends": ["numpy", "torch-cpu"],
               "timing": {**TIMING, "processes": 2}}
    summary = qkbench.run(mapping, out=tmp_path / "run").summary
    assert len(summary) == 4
    bad = summary[summary["status"] != "ok"]
    assert bad.empty, bad[["backend", "m", "reason"]].to_string()


def test_half_precision_attention_on_numpy_and_torch(tmp_path):
    sweep = {**AWKWARD, "kv_heads": [2], "dtype": ["float16", "bfloat16"], "scaled": [True]}
    summary = run(tmp_path, sweep, ["numpy", "torch-cpu"])
    ok = summary[summary["status"] == "ok"]
    assert set(zip(ok["backend"], ok["dtype"])) == {
        ("numpy", "float16"), ("torch-cpu", "float16"), ("torch-cpu", "bfloat16")}
    assert summary.loc[summary["status"] != "ok", "status"].eq("skipped").all()


def test_a_2d_only_plugin_is_skipped_with_a_reason_and_still_runs_plain_cells(tmp_path):
    sweep = {"n": [6], "d_k": [4], "heads": [1, 4], "dtype": ["float32"]}
    summary = run(tmp_path, sweep, ["tests.plugins.good_plugin:EinsumBackend", "numpy"])
    einsum = summary[summary["backend"] == "einsum"].set_index("heads")
    assert einsum.loc[1, "status"] == "ok"
    assert einsum.loc[4, "status"] == "skipped"
    assert "does not take batched inputs (it takes: the 2-D product only)" in \
        einsum.loc[4, "reason"]
    assert (summary.loc[summary["backend"] == "numpy", "status"] == "ok").all()


def test_a_backend_that_repeats_k_says_so_and_wrong_ones_fail(tmp_path):
    sweep = {"n": [4], "m": [9], "d_k": [5], "heads": [4], "kv_heads": [2],
             "causal": [True], "scaled": [True], "dtype": ["float32"]}
    names = ["RepeatedKv", "WrongKeyHead", "MaskLeftOut", "ScaleLeftOut"]
    summary = run(tmp_path, sweep, [f"{PLUGINS}:{name}" for name in names]).set_index("backend")
    assert summary.loc["repeated-kv", "status"] == "ok"
    assert summary.loc["repeated-kv", "kv_materialised"] == True  # noqa: E712
    for name in ("wrong-key-head", "mask-left-out", "scale-left-out"):
        assert summary.loc[name, "status"] == "mismatch", name
    assert "masked entries are not -inf" in summary.loc["mask-left-out", "reason"]
    assert "exceeds the float32 bound" in summary.loc["wrong-key-head", "reason"]


def test_presets_run_and_the_figures_are_drawn(tmp_path):
    sweep = {"n": [8, 16], "preset": ["gpt-2"], "causal": [False, True], "scaled": True,
             "dtype": ["float32"]}
    prefill = qkbench.run({"name": "p", "sweep": sweep, "backends": ["numpy"], "timing": TIMING},
                          out=tmp_path / "prefill")
    decode_sweep = {"n": [1, 2], "m": [16, 32], "preset": ["gpt-2"], "dtype": ["float32"]}
    decode = qkbench.run({"name": "d", "sweep": decode_sweep, "backends": ["numpy"],
                          "timing": TIMING}, out=tmp_path / "decode")
    assert (prefill.summary["status"] == "ok").all() and (decode.summary["status"] == "ok").all()
    assert set(prefill.summary["preset"]) == {"gpt-2"}
    from qkbench.present import plots

    drawn = plots.make_figures(plots.load_runs([prefill.path, decode.path]))
    assert {"attention_throughput", "decode_bandwidth"} <= set(drawn.figures)
    assert "CPU and a GPU" in drawn.skipped["attention_crossover"]
    assert "unmasked entry" in drawn.caption("attention_throughput")


def test_device_memory_counts_every_head_on_a_gpu_shaped_backend(tmp_path):
    sweep = {"n": [16], "d_k": [4], "heads": [4], "kv_heads": [2], "batch": [1, 256],
             "causal": [True], "dtype": ["float32"]}
    summary = run(tmp_path, sweep, [f"{PLUGINS}:FakeGpuAttention"]).set_index("batch")
    assert summary.loc[1, "status"] == "ok" and summary.loc[1, "device"] == "gpu"
    # B·H·n·m = 262144 float32 entries, twice: 2 MiB against the fake's 1 MiB free.
    assert summary.loc[256, "status"] == "skipped"
    assert "of device memory" in summary.loc[256, "reason"]
