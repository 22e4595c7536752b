"""Several worker processes per backend: a cell's rounds take turns among them."""

from __future__ import annotations

import pandas as pd

from tests.conftest import read_summary, run_cli, write_config


def _run(tmp_path, backends, processes, **timing):
    config = write_config(tmp_path, backends, timing={"processes": processes, **timing})
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--quiet")
    return result, out


def test_a_cell_is_sampled_in_as_many_processes_as_asked(tmp_path):
    log = tmp_path / "pids.txt"
    backend = {"name": "tests.plugins.pid_logging:PidLogging", "options": {"log": str(log)}}
    result, out = _run(tmp_path, ["numpy", backend], processes=3)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(set(log.read_text().split())) == 3  # three processes set the cell up
    summary = read_summary(out).set_index("backend")
    assert summary.loc["pid-logging", "processes"] == 3
    assert summary.loc["numpy", "processes"] == 3
    samples = pd.read_parquet(out / "samples.parquet")
    # Every process got at least one round (round r is taken in process r mod 3).
    for backend_name in ("numpy", "pid-logging"):
        rounds = samples.loc[samples["backend"] == backend_name, "round"]
        assert {r % 3 for r in rounds} == {0, 1, 2}


def test_one_process_when_asked(tmp_path):
    log = tmp_path / "pids.txt"
    backend = {"name": "tests.plugins.pid_logging:PidLogging", "options": {"log": str(log)}}
    result, out = _run(tmp_path, [backend], processes=1)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(set(log.read_text().split())) == 1
    assert read_summary(out)["processes"].tolist() == [1]


def test_a_full_device_samples_in_the_processes_that_fit(tmp_path):
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    backend = {"name": "tests.plugins.fake_gpu:CrowdedFakeGpu", "options": {"ledger": str(ledger)}}
    result, out = _run(tmp_path, [backend], processes=3)
    assert result.returncode == 0, result.stderr[-2000:]
    row = read_summary(out).iloc[0]
    assert row["status"] == "ok"
    assert row["processes"] == 2  # the third process found no room and was left out
    assert len(list(ledger.iterdir())) == 2


def test_a_crash_in_any_process_fails_the_cell_and_keeps_the_others(tmp_path):
    # The plugin sets up fine in the first worker and dies in the second.
    marker = tmp_path / "first-setup-done"
    backend = {"name": "tests.plugins.misbehaving:CrashesAfterFirstSetup",
               "options": {"marker": str(marker)}}
    result, out = _run(tmp_path, ["numpy", backend], processes=2)
    assert result.returncode == 1
    summary = read_summary(out).set_index("backend")
    assert summary.loc["numpy", "status"] == "ok"
    assert summary.loc["crashes-after-first-setup", "status"] == "crashed"


class _FakeWorker:
    """Records what start_workers asks of it, in one shared log."""

    def __init__(self, name, log):
        self.name, self.log, self.startup_s = name, log, 1.0

    def launch(self, load=False):
        self.log.append(("launch" if load else "launch without load", self.name))

    def ensure_started(self):
        self.log.append(("wait", self.name))


def test_workers_start_together_and_only_for_available_backends():
    from qkbench.measure.handles import BackendWorkers, start_workers

    log = []
    backends = {label: BackendWorkers(None, "cpu", ("float32",), frozenset(),
                                      [_FakeWorker(f"{label}{i}", log) for i in range(3)])
                for label in ("a", "gone", "unused")}

    def open_backend(label):
        log.append(("open", label))
        backends[label].unavailable = "not here" if label == "gone" else None
        return backends[label]

    took = start_workers(backends, ["a", "gone", "a"], open_backend)
    # Both first workers launch before either is asked anything: their start-ups overlap.
    assert log[:2] == [("launch", "a0"), ("launch", "gone0")]
    assert log[2:4] == [("open", "a"), ("open", "gone")]
    # Then the other workers of the available backend, launched together, then waited for.
    assert log[4:] == [("launch", "a1"), ("launch", "a2"), ("wait", "a1"), ("wait", "a2")]
    assert took >= 0.0
    assert all(w.startup_s == 0.0 for b in backends.values() for w in b.workers)


def test_every_worker_runs_load_once_as_the_run_starts(tmp_path):
    log = tmp_path / "pids.txt"
    backend = {"name": "tests.plugins.pid_logging:PidLogging", "options": {"log": str(log)}}
    result, _ = _run(tmp_path, [backend], processes=3)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = log.with_suffix(".load").read_text().split()
    assert len(loaded) == 3 and set(loaded) == set(log.read_text().split())
    # The workers ended without the interpreter's teardown, which took torch's and numba's
    # workers most of a second each: no atexit handler ran.
    assert not log.with_suffix(".atexit").exists()
