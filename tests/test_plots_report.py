"""Figures and reports from recorded run directories (tests/data/runs, see tests/data/README.md).

`laptop` is a real `qkbench run` of tests/data/tiny.yaml written before the phase/cache/roofline
columns existed; `gpubox` is a hand-made copy in the newer layout with GPU rows on another
machine. Figures are checked through the matplotlib objects the builders return (titles, axis
labels, scales, series), not through pixels; a few are rendered to prove they are not empty.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import qkbench

from qkbench import cli
from qkbench.present import plots
from qkbench.present import report
from qkbench.errors import UsageError
from tests.conftest import run_cli, write_config

DATA = Path(__file__).resolve().parent / "data" / "runs"
LAPTOP, GPUBOX = DATA / "laptop", DATA / "gpubox"
ALL_FIGURES = {"time_vs_size", "throughput", "roofline", "speedup", "gpu_over_cpu",
               "noisiest_cells"}


@pytest.fixture(scope="module")
def laptop() -> plots.RunSet:
    return plots.load_runs([LAPTOP])


@pytest.fixture(scope="module")
def both() -> plots.RunSet:
    return plots.load_runs([LAPTOP, GPUBOX])


@pytest.fixture(scope="module")
def figures(both) -> plots.Figures:
    return plots.make_figures(both)


def series(fig) -> set[str]:
    """Labels of every labelled artist on every axes: one per series (and per ceiling line)."""
    return {label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]}


def title(fig) -> str:
    """The figure's title and subtitle as one line (they are wrapped to the figure's width)."""
    return " ".join(fig._suptitle.get_text().split())


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# --- loading ----------------------------------------------------------------------------------

def test_old_layout_gets_defaults_for_newer_columns():
    raw = pd.read_parquet(LAPTOP / "summary.parquet")
    assert "phase" not in raw and "intensity" not in raw  # recorded before they existed
    run = qkbench.load_run(LAPTOP)  # the one loader: every tool reads runs through it
    summary, samples, meta = run.summary, run.samples, run.meta
    assert set(summary["phase"]) == {"kernel"} and set(summary["cache"]) == {"warm"}
    assert summary["threads_requested"].isna().all()
    assert (summary["precision"] == summary["dtype"]).all()
    row = summary[(summary["backend"] == "numpy") & (summary["n"] == 64)
                  & (summary["d_k"] == 16) & (summary["dtype"] == "float32")].iloc[0]
    expected_bytes = (64 * 16 + 64 * 16 + 64 * 64) * 4  # Q and K read once, S written once
    assert row["bytes"] == expected_bytes
    assert row["intensity"] == pytest.approx(2 * 64 * 64 * 16 / expected_bytes)
    assert summary["peak_gflops"].isna().all()
    assert set(samples["phase"]) == {"kernel"}
    assert meta["environment"]["hostname"] == "vm"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_not_a_run_directory_is_a_usage_error(tmp_path, make):
    folder = tmp_path / "run"
    if make == "empty":
        folder.mkdir()
    with pytest.raises(UsageError, match="run directory not found|no summary.parquet"):
        plots.load_runs([folder])


def test_machines_are_labelled_by_host_and_hardware(both, tmp_path):
    assert both.machines == ["vm", "gpubox"]
    assert both.runs[1].label == "gpubox (AMD EPYC 9454 48-Core Processor / NVIDIA H100 80GB HBM3)"
    copy = tmp_path / "again"
    shutil.copytree(LAPTOP, copy)
    twice = plots.load_runs([LAPTOP, copy])
    assert twice.machines == ["vm [laptop]", "vm [again]"]  # same label: the folder tells them apart
    assert set(twice.summary["machine"]) == set(twice.machines)


# --- figures ----------------------------------------------------------------------------------

def test_every_figure_is_drawn_from_both_machines(figures):
    assert set(figures.figures) == ALL_FIGURES and not figures.skipped


def test_time_vs_size(figures, laptop):
    fig = figures.figures["time_vs_size"]
    assert "Time per call" in title(fig)
    assert "vm (AMD EPYC)" in title(fig) and "gpubox" in title(fig)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_title() for ax in panels) == [
        "d_k = 16 · float32", "d_k = 16 · float64", "d_k = 64 · float32", "d_k = 64 · float64"]
    for ax in panels:
        assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
        assert ax.get_xlabel().startswith("n = m")
        assert ax.containers, "error bars (the 95% CI) are drawn"
    assert {"numpy · kernel @ vm", "torch-cuda · end-to-end @ gpubox",
            "cupy · kernel @ gpubox"} <= series(fig)
    assert not any("tf32" in label for label in series(fig))  # no ok cell: not a series
    assert {"colour: backend", "marker: machine", "line: variant", "95% CI of the median"} \
        <= set(legend_texts(fig))
    one = plots.time_vs_size(laptop)
    assert series(one) == {"numpy", "numba", "torch-cpu"}
    assert "time per call" in one.axes[0].get_ylabel()
    # numba at n = 1024, d_k = 64 took fewer than 6 samples: drawn hollow, explained in the legend
    assert "hollow: < 6 samples, no CI" in legend_texts(one)


def test_throughput_with_and_without_a_known_peak(figures, laptop):
    fig = figures.figures["throughput"]
    assert "GFLOP/s" in fig.axes[0].get_ylabel() and fig.axes[0].get_yscale() == "log"
    assert {"peak gpubox gpu", "peak gpubox cpu"} <= series(fig)
    ceiling = next(line for line in fig.axes[0].lines if line.get_label() == "peak gpubox gpu")
    assert ceiling.get_ydata()[0] == 67000.0
    one = plots.throughput(laptop)
    assert not any(label.startswith("peak") for label in series(one))
    assert "peak unknown: no ceiling drawn" in legend_texts(one)


def test_roofline(figures, laptop):
    fig = figures.figures["roofline"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["float32", "float64"]
    ax = panels[0]
    assert "arithmetic intensity" in ax.get_xlabel() and "FLOP/byte" in ax.get_xlabel()
    assert "GFLOP/s" in ax.get_ylabel()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    labels = series(fig)
    assert {"gpubox cpu memory: 460 GB/s", "gpubox gpu memory: 3350 GB/s",
            "compute peak gpubox gpu"} <= labels
    one = plots.roofline(laptop)
    assert "ceilings not drawn" in title(one)
    assert not any("memory" in label or "peak" in label for label in series(one))


def test_speedup_over_a_baseline_backend(figures, laptop):
    fig = figures.figures["speedup"]
    assert "Speedup over numpy" in title(fig)
    assert not any(label.startswith("numpy") for label in series(fig))
    assert "numba · kernel @ vm" in series(fig)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "speedup over numpy" in ax.get_ylabel()
    # each point is numpy's median / the backend's, in the same cell
    ok = laptop.ok
    cell = ok[(ok["dtype"] == "float32") & (ok["d_k"] == 16) & (ok["n"] == 256)]
    expected = (cell.loc[cell["backend"] == "numpy", "median_s"].iloc[0]
                / cell.loc[cell["backend"] == "numba", "median_s"].iloc[0])
    line = next(line for line in plots.speedup(laptop).axes[0].lines
                if line.get_label() == "numba")
    assert line.get_ydata()[list(line.get_xdata()).index(256)] == pytest.approx(expected)
    other = plots.make_figures(laptop, "torch-cpu")
    assert "Speedup over torch-cpu" in title(other.figures["speedup"])
    assert other.stem("speedup") == "speedup_over_torch-cpu"
    with pytest.raises(UsageError, match="'cublas' is in none of the runs"):
        plots.make_figures(laptop, "cublas")


def test_gpu_over_cpu_marks_the_crossover(figures, laptop):
    fig = figures.figures["gpu_over_cpu"]
    assert "best CPU and best GPU backend of the same machine: gpubox" in title(fig)
    assert "GPU speedup over CPU" in fig.axes[0].get_ylabel()
    labels = series(fig)
    assert "d_k=64, kernel: GPU faster from n = 256" in labels
    assert "d_k=16, end-to-end: no crossover up to n = 1024" in labels
    marks = [line for ax in fig.axes for line in ax.lines if line.get_gid() == "crossover"]
    assert len(marks) == 6  # every line but the two that never cross
    assert "gpu_over_cpu" in plots.make_figures(laptop).skipped


def test_crossover_agrees_with_harness_crossover(tmp_path):
    """Best GPU over best CPU per shape, on a hand-made run whose answer is known: a lone GPU
    win at n = 64 is not the crossover (qkbench.analysis.crossover's rule, as on the terminal)."""
    rows = []
    for n, cpu_a, cpu_b, gpu_a, gpu_b in [(64, 1e-6, 2e-6, 9e-6, 0.5e-6),
                                          (128, 4e-6, 3e-6, 9e-6, 5e-6),
                                          (256, 30e-6, 20e-6, 25e-6, 10e-6),
                                          (512, 300e-6, 200e-6, 40e-6, 90e-6)]:
        for backend, device, seconds in [("cpu-a", "cpu", cpu_a), ("cpu-b", "cpu", cpu_b),
                                         ("gpu-a", "gpu", gpu_a), ("gpu-b", "gpu", gpu_b)]:
            rows.append({"backend": backend, "device": device, "dtype": "float32", "n": n,
                         "m": n, "d_k": 64, "status": "ok", "reason": "", "median_s": seconds,
                         "ci_low_s": seconds * 0.99, "ci_high_s": seconds * 1.01,
                         "rel_ci": 0.01, "samples": 10, "calls_per_sample": 1,
                         "converged": True, "flops": 2 * n * n * 64,
                         "gflops": 2 * n * n * 64 / seconds / 1e9})
    folder = tmp_path / "made"
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / "summary.parquet")
    (folder / "meta.json").write_text(json.dumps({"environment": {"hostname": "box"}}))
    runs = plots.load_runs([folder])
    table = plots.gpu_cpu_speedup(runs).set_index("n")
    assert table.loc[128, "cpu_backend"] == "cpu-b" and table.loc[128, "gpu_backend"] == "gpu-b"
    assert table.loc[128, "speedup"] == pytest.approx(3e-6 / 5e-6)
    assert table.loc[64, "speedup"] == pytest.approx(2.0)  # a win, but the GPU loses at 128
    crossing = plots.crossovers(plots.gpu_cpu_speedup(runs))
    assert crossing["crossover_n"].tolist() == [256]
    fig = plots.gpu_over_cpu(runs)
    assert series(fig) == {"d_k=64: GPU faster from n = 256"}
    mark = next(line for line in fig.axes[0].lines if line.get_gid() == "crossover")
    assert list(mark.get_xdata()) == [256.0]
    assert "noisiest_cells" in plots.make_figures(runs).skipped  # no samples.parquet


def test_noisiest_cells_show_their_samples(figures, both):
    fig = figures.figures["noisiest_cells"]
    widest = plots.noisiest(both, 4)
    assert len(fig.axes) == 2 * len(widest)
    first = widest.iloc[0]
    heading = fig.axes[0].get_title(loc="left")
    assert f"{first['backend']} {first['dtype']}" in heading and f"n={first['n']}" in heading
    points = fig.axes[0].collections[-1].get_offsets()
    assert len(points) == len(plots.cell_samples(both, first)) == first["samples"]
    assert "time per call" in fig.axes[0].get_ylabel()
    assert "since the cell's first sample" in fig.axes[1].get_xlabel()
    assert f"±{100 * first['rel_ci']:.0f}%" in fig.axes[1].get_title(loc="left")


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    """`qkbench plot RUN` once, on a copy of the laptop run: figures land in RUN/figures/."""
    run = tmp_path_factory.mktemp("plot") / "run"
    shutil.copytree(LAPTOP, run)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["plot", str(run)])
    return code, run / "figures", printed.getvalue()


def test_cli_plot_writes_png_and_svg_into_the_run_directory(plotted):
    code, folder, printed = plotted
    assert code == 0
    assert "not drawn: gpu_over_cpu (the runs have no shape with ok cells on both" in printed
    written = sorted(folder.iterdir())
    assert {p.name for p in written} == {f"{stem}.{suffix}" for suffix in ("png", "svg")
                                         for stem in ("time_vs_size", "throughput", "roofline",
                                                      "speedup_over_numpy", "noisiest_cells")}
    for path in written:
        data = path.read_bytes()
        assert len(data) > 10_000, path  # a figure with axes but nothing drawn is far smaller
        if path.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert b"<svg" in data[:1000]
    assert "Time per call" in (folder / "time_vs_size.svg").read_text()  # text stays text


def test_no_figure_is_empty(figures):
    for name, fig in figures.figures.items():
        drawn = [ax for ax in fig.axes if ax.get_visible()]
        assert drawn and all(ax.lines or ax.collections or ax.containers for ax in drawn), name
        assert fig.legends, name


# --- report -----------------------------------------------------------------------------------

class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`qkbench report` once: two machines, a baseline, the default location (first RUN)."""
    run = tmp_path_factory.mktemp("report") / "laptop"
    shutil.copytree(LAPTOP, run)
    assert cli.main(["report", str(run), str(GPUBOX), "--baseline", str(LAPTOP)]) == 0
    return ((run / "report.html").read_text(encoding="utf-8"),
            (run / "report.md").read_text(encoding="utf-8"))


def test_html_report_is_self_contained_and_complete(built):
    page, _ = built
    parser = _Collect()
    parser.feed(page)
    parser.close()
    tags = [tag for tag, _ in parser.tags]
    text = " ".join(parser.text)
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == len(ALL_FIGURES)
    assert all(attrs["src"].startswith("data:image/png;base64,") for attrs in images)
    ids = {attrs.get("id") for _, attrs in parser.tags}
    assert {f"figure-{name}" for name in ALL_FIGURES} <= ids
    assert {"machines", "summary", "problems", "comparison"} <= ids
    assert "script" not in tags and "link" not in tags
    assert not any(value and value.startswith(("http:", "https:", "//"))
                   for _, attrs in parser.tags for value in attrs.values())
    # the machines, the summary table in suitable units, the failures with their reasons
    assert "NVIDIA H100 80GB HBM3" in text and "AMD EPYC 9454 48-Core Processor" in text
    assert tags.count("table") >= 4
    for header in ("backend", "median", "95% CI", "GFLOP/s", "% of peak"):
        assert f"<th class=\"num\">{header}</th>" in page or f"<th>{header}</th>" in page
    assert "µs" in text and "ms" in text
    assert "tf32-in-disguise" in text and "mismatch" in text
    assert "max error" in text and "does not support float64" in text
    assert "GPU faster from n = 256" in text


def test_markdown_summary(built):
    _, markdown = built
    assert markdown.startswith("## qkbench: tiny")
    assert "- **vm**: AMD EPYC" in markdown and "NVIDIA H100 80GB HBM3" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert table[0] == "| dtype | d_k | n | m | variant | vm | gpubox |"
    assert any(line.startswith("| float32 | 16 | 1024 | 1024 | kernel | ") for line in table)
    assert any(line.startswith("| float32 | 16 | 1024 | 1024 | end-to-end | – |")
               for line in table)  # the laptop run has no end-to-end cells
    assert "### Failed (24)" in markdown and "**mismatch**" in markdown
    assert "### Skipped (24, not failures)" in markdown
    assert "### Compared with baseline `laptop`" in markdown


def test_comparison_is_the_ratio_of_medians_per_matching_cell(built):
    table = report.compare(LAPTOP, plots.load_runs([GPUBOX]))
    # only the cells both runs have: CPU backends in the kernel phase
    assert set(table["backend"]) == {"numpy", "numba", "torch-cpu"}
    assert set(table["phase"]) == {"kernel"}
    judged = table[table["verdict"] != "not comparable"]  # too few samples: no ratio
    assert np.allclose(judged["ratio"], 0.25)  # gpubox's CPU rows are the laptop's / 4
    # compare's rule decides: faster where the interval is clear of ±10%, else same (a tiny
    # recorded cell's interval can be that wide), never slower
    assert set(table["verdict"]) <= {"faster", "same", "not comparable"}
    assert "faster" in set(table["verdict"])


def test_report_and_compare_give_one_pair_of_runs_one_verdict():
    table = report.compare(LAPTOP, plots.load_runs([GPUBOX]))
    verdicts = qkbench.compare(LAPTOP, GPUBOX, allow_different_machines=True).table
    merged = table.merge(verdicts, on=["backend", "dtype", "n", "m", "d_k", "phase", "cache"],
                         suffixes=("", "_compare"))
    assert len(merged) == len(table) > 0
    assert (merged["verdict"] == merged["verdict_compare"]).all()


# --- command line -----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["plot", "report"])
def test_cli_refuses_what_is_not_a_run_directory(tmp_path, capsys, command):
    (tmp_path / "empty").mkdir()
    for target, message in ((tmp_path / "nope", "run directory not found"),
                            (tmp_path / "empty", "no summary.parquet")):
        assert cli.main([command, str(target)]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("qkbench: error: ") and message in err
    assert cli.main([command, str(LAPTOP), "--baseline-backend", "cublas"]) == cli.EXIT_USAGE
    assert "'cublas' is in none of the runs" in capsys.readouterr().err


def test_cli_error_is_one_line_in_a_real_process(tmp_path):
    result = run_cli("plot", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr == f"qkbench: error: run directory not found: {tmp_path / 'missing'}\n"


def test_run_survives_a_plotting_failure(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts on this machine\nsecond line")

    monkeypatch.setattr(plots, "plot_runs", broken)
    cli._draw_run_figures(tmp_path, quiet=False)  # must not raise
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("qkbench: warning: figures not drawn: no fonts on this machine"
                            "\\nsecond line\n")
    assert cli.build_parser().parse_args(["run", "--no-plots"]).no_plots


def test_run_draws_its_figures(tmp_path):
    config = write_config(tmp_path, ["numpy"], n=[16])
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--no-progress",
                     plots=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "figures" / "time_vs_size.png").is_file()
    assert f"figures: {tmp_path / 'run' / 'figures'}" in result.stdout
    assert "figures not drawn" not in result.stderr  # (a contention warning is the machine's)


def test_samples_set_aside_by_the_machine_check_are_shown_apart(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LAPTOP, run)
    laptop = plots.load_runs([run])
    first = plots.noisiest(laptop, 1).iloc[0]
    # This stored run predates the check: flag the cell's first four samples as set aside.
    samples = pd.read_parquet(run / "samples.parquet")
    cell = ((samples["backend"] == first["backend"]) & (samples["dtype"] == first["dtype"])
            & (samples["n"] == first["n"]) & (samples["d_k"] == first["d_k"]))
    samples["machine_fit"] = True
    samples.loc[samples.index[cell][:4], "machine_fit"] = False
    samples.to_parquet(run / "samples.parquet", index=False)

    marked = plots.load_runs([run])
    cell = plots.cell_samples(marked, first)
    aside = int((~cell["machine_fit"]).sum())
    assert aside == 4 and len(cell) >= 4 + 3  # enough kept that the set-aside ones stay out
    fig = plots.noisiest_cells(marked, 1)
    left, right = fig.axes
    hollow, kept = left.collections[-2], left.collections[-1]
    assert len(hollow.get_offsets()) == aside
    assert len(kept.get_offsets()) == len(cell) - aside
    assert f"(+{aside} set aside)" in right.get_title(loc="left")
    assert "set aside by the machine check (not in the median)" in series(fig)
