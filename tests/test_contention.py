"""The foreign-load figure: CPU used by anything but qkbench while a group sampled.

A fake /proc (written by the test) stands in for the kernel's counters, so the arithmetic is
checked exactly; one test reads the real /proc against a real busy process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qkbench.machine.contention import LoadMeter, process_cpu_s, system_busy_s

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class FakeProc:
    """A /proc with a 'cpu' line and per-process stat files, in clock ticks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        self.set_system(busy=0, idle=0)

    def set_system(self, busy: int, idle: int, steal: int = 0) -> None:
        # user nice system idle iowait irq softirq steal guest guest_nice
        (self.root / "stat").write_text(
            f"cpu  {busy} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")

    def set_process(self, pid: int, utime: int, stime: int = 0, name: str = "python") -> None:
        folder = self.root / str(pid)
        folder.mkdir(exist_ok=True)
        # Fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt
        # cmajflt utime stime ...
        (folder / "stat").write_text(f"{pid} ({name}) S 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0\n")

    def remove_process(self, pid: int) -> None:
        for item in (self.root / str(pid)).iterdir():
            item.unlink()
        (self.root / str(pid)).rmdir()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def started_meter(tmp_path: Path, pids: list[int]) -> tuple[FakeProc, FakeClock, LoadMeter]:
    """A fake /proc where our process 10 has used nothing yet, and a meter started on it that
    counts `pids` (a list the test may extend) as ours."""
    proc, clock = FakeProc(tmp_path / "proc"), FakeClock()
    proc.set_process(10, utime=0)
    meter = LoadMeter(lambda: list(pids), proc.root, clock)
    meter.start()
    return proc, clock, meter


def test_counts_what_other_processes_used(tmp_path: Path) -> None:
    proc, clock, meter = started_meter(tmp_path, [10])
    # Two seconds pass: our process used 1.5 s, the whole machine 2.5 s busy.
    clock.now = 2.0
    proc.set_process(10, utime=int(1.5 * TICKS))
    proc.set_system(busy=int(2.5 * TICKS), idle=0)
    assert meter.stop() == pytest.approx(0.5)


def test_steal_time_is_foreign_load(tmp_path: Path) -> None:
    proc, clock, meter = started_meter(tmp_path, [10])
    clock.now = 1.0
    proc.set_system(busy=0, idle=0, steal=TICKS)  # the hypervisor gave a core away
    assert meter.stop() == pytest.approx(1.0)


def test_a_worker_started_during_the_group_counts_as_ours(tmp_path: Path) -> None:
    pids = [10]
    proc, clock, meter = started_meter(tmp_path, pids)
    proc.set_process(11, utime=TICKS, stime=TICKS)  # restarted worker, 2 s of CPU
    pids.append(11)
    clock.now = 2.0
    proc.set_system(busy=2 * TICKS, idle=2 * TICKS)
    assert meter.stop() == pytest.approx(0.0)


def test_rounding_never_makes_load_negative(tmp_path: Path) -> None:
    proc, clock, meter = started_meter(tmp_path, [10])
    clock.now = 1.0
    proc.set_process(10, utime=TICKS)
    proc.set_system(busy=TICKS - 1, idle=TICKS)  # per-process ticks ran ahead of the total
    assert meter.stop() == 0.0


def test_unknown_without_proc(tmp_path: Path) -> None:
    meter = LoadMeter(lambda: [os.getpid()], tmp_path / "no-proc", FakeClock())
    meter.start()
    assert meter.stop() is None
    assert system_busy_s(tmp_path / "no-proc") is None


def test_process_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path / "proc")
    proc.set_process(12, utime=3 * TICKS, stime=TICKS, name="my (odd) name")
    assert process_cpu_s(12, proc.root) == pytest.approx(4.0)
    assert process_cpu_s(13, proc.root) is None


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs Linux /proc")
def test_a_real_busy_neighbour_shows_up() -> None:
    # A child process spins for a second; this process only sleeps. The meter must see about
    # one core of foreign work (less if the machine is too busy to give the child a full core).
    meter = LoadMeter(lambda: [os.getpid()])
    spinner = subprocess.Popen([sys.executable, "-c",
                                "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass"])
    meter.start()
    try:
        time.sleep(1.0)
    finally:
        spinner.wait()
    load = meter.stop()
    assert load is not None and 0.5 <= load <= 2.5


def test_run_warns_only_about_cells_sampled_beside_real_load() -> None:
    import pandas as pd

    from qkbench.present.console import contention_note

    quiet = pd.DataFrame({"status": ["ok", "ok", "error"], "foreign_load": [0.02, 0.2, 1.5]})
    assert contention_note(quiet) == ""  # the failed cell's load is not a timing caveat
    busy = pd.DataFrame({"status": ["ok", "ok", "ok"], "foreign_load": [0.9, 1.1, 0.01]})
    note = contention_note(busy)
    assert "2 of 3 ok cell(s)" in note and "up to 1.10" in note
    assert contention_note(pd.DataFrame({"status": ["ok"]})) == ""  # runs from before the column
