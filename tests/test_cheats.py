"""Plugins that cheat, installed as third-party packages through the entry point, fail with a
status and a reason that name the cheat, while an honest plugin beside them is ok."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qkbench.machine.environment import fingerprint
from tests.conftest import REPO, install_plugin_package, read_summary, run_cli, write_config

CHEATS = REPO / "tests" / "plugins" / "cheats"
# entry-point name → (source file, class, expected status, the check its reason opens with)
PLUGINS = {
    "honest": ("honest.py", "Honest", "ok", None),
    "memoising": ("memoising.py", "Memoising", "mismatch", "fresh inputs:"),
    "in-place": ("in_place.py", "InPlace", "tampered", "untouched inputs:"),
    "degrading": ("degrading.py", "Degrading", "mismatch", "timed call:"),
    "unsynced": ("unsynced.py", "Unsynced", "unsynced", "still running after sync():"),
    "lazy": ("lazy.py", "Lazy", "unsynced", "work done in to_numpy():"),
    "too-fast": ("too_fast.py", "TooFast", "implausible", "replayed answers:"),
}
FAILED_CHECK = {"memoising": "fresh_inputs", "in-place": "untouched_inputs",
                "degrading": "timed_call", "unsynced": "idle_after_sync", "lazy": "to_numpy",
                "too-fast": "replay"}
# A cheat two checks catch may meet either first, and which one is first depends on the
# machine. A lazy backend's to_numpy does the product, which at d_k = 64 costs about as much as
# the copies an honest to_numpy is allowed; where it slips under them, its "timed call"
# (building a tuple) is faster than the CPU's physical peak. A replaying backend's calls are
# as fast as returning a stored array: on a CPU with a low peak (two AVX2 cores) the replay
# check meets it first, on one with AVX-512 the speed check may.
# An unsynced backend's timed calls are only launches: the idle watch after sync() catches the
# work still queued, unless its thread has drained the queue by the time the watch looks (a
# clean-clone CI run on the 2-vCPU Zen 5 VM, once); then the launches' speed is beyond the
# CPU's peak.
SPEED_CHECK = ("implausible", "implausible speed:", "speed")
ALSO_CAUGHT_BY = {"lazy": SPEED_CHECK, "too-fast": SPEED_CHECK, "unsynced": SPEED_CHECK}


def _expected(name: str, row: pd.Series) -> tuple[str, str | None, str | None]:
    """(status, reason opening, failed_check) the row must show: the first check's, or the
    alternative one's when that is the check that caught it (its `failed_check` says so)."""
    _, _, status, opening = PLUGINS[name]
    other = ALSO_CAUGHT_BY.get(name)
    if other is not None and row["failed_check"] == other[2]:
        return other
    return status, opening, FAILED_CHECK.get(name)


def _physical_cpu_peaks() -> dict[str, float]:
    """This machine's CPU ceilings as `qkbench peaks` would store them, from the ISA: cores ×
    clock × FLOPs per cycle (two FMA units of 512, 256 or 128 bits), and a copy's bandwidth
    measured now. A stored peak measured while other tests load the machine can be a fifth
    of what an idle core pair does; the speed check needs one an honest kernel cannot pass,
    and a test must not depend on what another run stored in the user's cache."""
    flags, mhz = set(), 0.0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
        elif line.startswith("cpu MHz"):
            mhz = max(mhz, float(line.split(":", 1)[1]))
    try:
        mhz = max(mhz, int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
                           .read_text()) / 1e3)
    except (OSError, ValueError):
        pass
    lanes32 = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle32 = 2 * 2 * lanes32  # two FMA units, two FLOPs per lane
    cores = len(os.sched_getaffinity(0))
    src = np.ones(8 << 20)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):  # the first copy also faults dst's pages in
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    bandwidth = 2 * src.nbytes / best / 1e9
    peak32 = cores * mhz * 1e-3 * per_cycle32
    return {"float32": peak32, "float64": peak32 / 2, "bandwidth_gbs": bandwidth,
            "source": f"physical (ISA): {cores} cores × {mhz:.0f} MHz × {per_cycle32} FLOP/cycle"}


def _peaks_file(folder: Path, cpu: dict[str, float | str]) -> Path:
    path = folder / "peaks.json"
    path.write_text(json.dumps({fingerprint()["hardware_key"]: {
        "measured_utc": "now", "cpu": cpu, "gpu": None}}))
    return path


@pytest.fixture(scope="module")
def cheats_run(tmp_path_factory):
    """One run of every plugin of the table over one shape, as a user would start it."""
    folder = tmp_path_factory.mktemp("cheats")
    site = folder / "site"
    for name, (source, cls, _, _) in PLUGINS.items():
        install_plugin_package(site, CHEATS / source, name, cls)
    peaks_file = _peaks_file(folder, _physical_cpu_peaks())
    # d_k = 64: large enough that a product costs clearly more than copying its answer.
    config = write_config(folder, list(PLUGINS), n=[256], d_k=[64],
                          timing={"processes": 2})
    out = folder / "run"
    env = {"QKBENCH_PEAKS": str(peaks_file)}
    result = run_cli("run", str(config), "--out", str(out), "--no-progress", extra_path=site,
                     env=env)
    return result, read_summary(out).set_index("backend")


def test_every_cheat_fails_and_the_run_exits_1(cheats_run):
    result, summary = cheats_run
    assert result.returncode == 1, result.stderr
    assert set(summary.index) == set(PLUGINS)


@pytest.mark.parametrize("name", list(PLUGINS))
def test_each_plugin_ends_with_the_status_and_reason_of_its_cheat(cheats_run, name):
    _, summary = cheats_run
    row = summary.loc[name]
    status, opening, check = _expected(name, row)
    assert row["status"] == status, row["reason"]
    if opening is None:
        # An ok row's reason is empty, or says it rests on fewer samples than asked for (a
        # loaded machine); it never names a failed check.
        assert row["reason"] == "" or row["reason"].startswith("unconverged"), row["reason"]
        assert pd.isna(row["failed_check"]) or row["failed_check"] == ""
        assert row["median_s"] > 0
        assert row["cpu_after_sync_s"] >= 0 and row["speed_limit_s"] > 0
        assert row["outside_share"] == 0
    else:
        assert row["reason"].startswith(opening), row["reason"]
        assert row["failed_check"] == check
        # No time is shown as a result for a cell whose timed work was not real.
        assert np.isnan(row["median_s"]) and np.isnan(row["gflops"])


def test_a_wrong_timed_answer_reports_how_much_of_s_is_outside_the_bound(cheats_run):
    _, summary = cheats_run
    row = summary.loc["degrading"]
    assert 0.5 < row["outside_share"] <= 1.0  # half of d_k dropped: nearly every entry wrong
    assert 0 <= row["worst_i"] < 256 and 0 <= row["worst_j"] < 256
    assert f"S[{row['worst_i']}, {row['worst_j']}]" in row["reason"]


def test_the_console_names_each_cheat(cheats_run):
    result, summary = cheats_run
    for name in PLUGINS:
        status, opening, _ = _expected(name, summary.loc[name])
        if opening is not None:
            assert f"{name} float32 n=256 m=256 d_k=64: {status} — {opening}" in result.stdout


def test_a_median_faster_than_a_ceiling_is_implausible_and_not_shown(tmp_path):
    """The speed check is the backstop for cheats the others miss; here an honest plugin meets
    a stored ceiling far below what it does (as one from a slower machine would be)."""
    site = tmp_path / "site"
    install_plugin_package(site, CHEATS / "honest.py", "honest", "Honest")
    peaks_file = _peaks_file(tmp_path, {"float32": 1e-3, "bandwidth_gbs": 10.0,
                                        "source": "physical (a slower machine's)"})
    config = write_config(tmp_path, ["honest"], n=[64], d_k=[16], timing={"processes": 1})
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress", extra_path=site,
                     env={"QKBENCH_PEAKS": str(peaks_file)})
    assert result.returncode == 1, result.stderr
    row = read_summary(out).iloc[0]
    assert (row["status"], row["failed_check"]) == ("implausible", "speed")
    assert row["reason"].startswith("implausible speed: the median ")
    assert "2× the cpu float32 peak of 0.001 GFLOP/s" in row["reason"]
    assert np.isnan(row["median_s"]) and row["samples"] == 0
    assert row["speed_limit_s"] > 0


def test_a_low_measured_peak_does_not_make_an_honest_plugin_implausible(tmp_path):
    """A stored peak measured far below what a kernel does (on a busy machine) is no ceiling:
    the check is against the CPU's physical peak, so an honest plugin stays ok, below it."""
    from qkbench.machine import cpu_peak

    if cpu_peak.physical_peak("float32") is None:
        pytest.skip("this CPU's clock cannot be read: no physical ceiling here")
    site = tmp_path / "site"
    install_plugin_package(site, CHEATS / "honest.py", "honest", "Honest")
    peaks_file = _peaks_file(tmp_path, {"float32": 1e-3, "bandwidth_gbs": 1e-3})
    config = write_config(tmp_path, ["honest"], n=[64], d_k=[16], timing={"processes": 1})
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress", extra_path=site,
                     env={"QKBENCH_PEAKS": str(peaks_file)})
    assert result.returncode == 0, result.stderr
    row = read_summary(out).iloc[0]
    assert row["status"] == "ok", row["reason"]
    assert row["speed_limit_s"] > 0 and 0 < row["pct_peak"] <= 100
