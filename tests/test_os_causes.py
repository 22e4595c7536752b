"""What the OS reports about a round, read from a fake /proc and /sys laid out like Linux's."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkbench.machine import os_causes
from qkbench.machine.os_causes import RoundCauses, cpu_stat_files, describe


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _proc(tmp_path: Path, cgroup: str, mountinfo: str, steal_ticks: int = 0) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    _steal(proc, steal_ticks)
    return proc


def _steal(proc: Path, ticks: int) -> None:
    (proc / "stat").write_text(f"cpu  100 0 50 1000 5 0 3 {ticks} 0 0\ncpu0 1 2 3\n")


V1_MOUNTS = ("30 25 0:26 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu\n"
             "31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")


def _v1_tree(tmp_path: Path, child: str) -> tuple[Path, Path]:
    """A v1 cpu hierarchy mounted at <tmp>/sys/fs/cgroup/cpu with the process in `child`."""
    root = tmp_path / "sys" / "fs" / "cgroup" / "cpu"
    (root / child).mkdir(parents=True)
    for folder in (root, root / child):
        (folder / "cpu.stat").write_text("nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")
    mounts = V1_MOUNTS.replace("/sys/fs/cgroup", str(tmp_path / "sys" / "fs" / "cgroup"))
    proc = _proc(tmp_path, f"4:memory:/x\n1:cpu:/{child}\n0::/\n", mounts)
    return proc, root


def test_v1_throttling_of_the_own_cgroup_sets_a_round_aside_with_its_amount(tmp_path):
    proc, root = _v1_tree(tmp_path, "qkbench-job")
    files = cpu_stat_files(proc)
    assert files == [root / "qkbench-job" / "cpu.stat", root / "cpu.stat"]
    clock = FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2)
    assert watch.readable == {"throttling": True, "steal": True, "clock": False}
    watch.start()
    clock.now += 0.1
    assert watch.stop() == {}  # a quiet round
    watch.start()
    clock.now += 0.1
    (root / "qkbench-job" / "cpu.stat").write_text(
        "nr_periods 3\nnr_throttled 2\nthrottled_time 40000000\n")  # 40 ms, in ns
    assert watch.stop() == {"throttled": pytest.approx(0.04)}


def test_throttling_below_the_share_of_the_round_is_not_a_cause(tmp_path):
    proc, root = _v1_tree(tmp_path, "job")
    clock = FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2)
    watch.start()
    clock.now += 0.1
    (root / "job" / "cpu.stat").write_text("nr_throttled 1\nthrottled_time 500000\n")  # 0.5 ms
    assert watch.stop() == {}


def test_a_limit_on_an_ancestor_is_seen_too(tmp_path):
    proc, root = _v1_tree(tmp_path, "slurm/job_1/step_0")
    files = cpu_stat_files(proc)
    assert len(files) == 2  # the own cgroup and the root have cpu.stat; the folders between not
    (root / "slurm" / "job_1" / "cpu.stat").write_text("nr_throttled 0\nthrottled_time 0\n")
    files = cpu_stat_files(proc)
    assert root / "slurm" / "job_1" / "cpu.stat" in files
    clock = FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2)
    watch.start()
    clock.now += 0.05
    (root / "slurm" / "job_1" / "cpu.stat").write_text("nr_throttled 1\nthrottled_time 9000000\n")
    assert watch.stop() == {"throttled": pytest.approx(0.009)}


def test_v2_reads_throttled_usec(tmp_path):
    root = tmp_path / "sys" / "fs" / "cgroup"
    (root / "user.slice").mkdir(parents=True)
    (root / "user.slice" / "cpu.stat").write_text(
        "usage_usec 10\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n")
    mounts = f"25 20 0:23 / {root} rw - cgroup2 cgroup2 rw\n"
    proc = _proc(tmp_path, "0::/user.slice\n", mounts)
    assert cpu_stat_files(proc) == [root / "user.slice" / "cpu.stat"]
    clock = FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2)
    watch.start()
    clock.now += 0.02
    (root / "user.slice" / "cpu.stat").write_text("nr_throttled 1\nthrottled_usec 5000\n")
    assert watch.stop() == {"throttled": pytest.approx(0.005)}


def test_a_hybrid_layout_s_v2_tree_without_cpu_figures_reads_unknown(tmp_path):
    root = tmp_path / "sys" / "fs" / "cgroup" / "unified"
    root.mkdir(parents=True)
    (root / "cpu.stat").write_text("usage_usec 10\n")  # no cpu controller here
    mounts = f"25 20 0:23 / {root} rw - cgroup2 cgroup2 rw\n"
    proc = _proc(tmp_path, "0::/\n", mounts)
    assert cpu_stat_files(proc) == []
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys")
    assert watch.readable["throttling"] is False


def test_steal_beyond_the_share_of_the_round_s_cpu_capacity_is_a_cause(tmp_path):
    proc = _proc(tmp_path, "0::/\n", "", steal_ticks=100)
    clock = FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2)
    watch.start()
    clock.now += 0.5
    _steal(proc, 103)  # 30 ms of 1 s of CPU capacity
    causes = watch.stop()
    assert set(causes) == {"steal"} and causes["steal"] == pytest.approx(
        3 / os_causes.ticks_per_second())


def test_one_tick_of_steal_is_the_counter_s_resolution_not_a_cause(tmp_path):
    # A 50 ms round on 2 CPUs: one tick (10 ms at 100 Hz) would be 10% of its capacity, but a
    # counter that moved by one tick may have lost almost nothing; two ticks surely lost one.
    proc = _proc(tmp_path, "0::/\n", "", steal_ticks=100)
    clock = FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2)
    tick = 1 / os_causes.ticks_per_second()
    watch.start()
    clock.now += 0.05
    _steal(proc, 101)
    assert watch.stop() == {}
    watch.start()
    clock.now += 0.05
    _steal(proc, 103)
    assert watch.stop() == {"steal": pytest.approx(2 * tick)}


def test_the_clock_is_recorded_but_never_a_cause(tmp_path):
    proc = _proc(tmp_path, "0::/\n", "")
    sys = tmp_path / "sys"
    for cpu, khz in (("cpu0", 2_000_000), ("cpu1", 3_000_000)):
        folder = sys / "devices" / "system" / "cpu" / cpu / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_cur_freq").write_text(f"{khz}\n")
    watch = RoundCauses(share=0.01, proc=proc, sys=sys, clock=FakeClock(), cpus=2)
    watch.start()
    watch._clock.now += 0.1
    assert watch.stop() == {}
    assert watch.mhz_readings == [2500.0]


def test_nothing_readable_degrades_to_unknown_never_an_error(tmp_path):
    watch = RoundCauses(share=0.01, proc=tmp_path / "nope", sys=tmp_path / "nope")
    assert watch.readable == {"throttling": False, "steal": False, "clock": False}
    watch.start()
    assert watch.stop() == {}


def test_a_row_names_each_cause_with_its_total_and_rounds():
    text = describe({3: {"throttled": 0.1}, 4: {"throttled": 0.05, "steal": 0.01}})
    assert text == "steal 0.010 s in 1 round; throttled 0.150 s in 2 rounds"
    assert describe({}) == ""


def _busy(proc: Path, user_ticks: int, steal_ticks: int = 0) -> None:
    (proc / "stat").write_text(f"cpu  {user_ticks} 0 0 1000 0 0 0 {steal_ticks} 0 0\n")


def _own(proc: Path, pid: int, ticks: int) -> None:
    (proc / str(pid)).mkdir(exist_ok=True)
    fields = ["S"] + ["0"] * 10 + [str(ticks), "0"] + ["0"] * 10
    (proc / str(pid) / "stat").write_text(f"{pid} (python worker) " + " ".join(fields) + "\n")


def test_other_processes_cpu_beyond_the_counters_rounding_is_a_cause(tmp_path):
    # Two CPUs, our two processes: a 0.5 s round with 60 busy ticks, 40 of them ours. The
    # counters' rounding is 2 CPUs + 2 processes that ran + 1 = 5 ticks; 20 - 5 = 15 ticks
    # of foreign work is beyond 1% of the round's 1 CPU-second.
    proc, clock = _proc(tmp_path, "0::/\n", ""), FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2,
                        own_pids=lambda: [11, 12])
    tick = 1 / os_causes.ticks_per_second()
    _busy(proc, 1000), _own(proc, 11, 500), _own(proc, 12, 300)
    watch.start()
    clock.now += 0.5
    _busy(proc, 1060), _own(proc, 11, 520), _own(proc, 12, 320)
    assert watch.stop() == {"foreign": pytest.approx(20 * tick)}
    # The same round with 4 foreign ticks, and with steal that is not another process's work:
    # within the rounding, and steal is counted as steal only.
    watch.start()
    clock.now += 0.5
    _busy(proc, 1064 + 40, steal_ticks=0), _own(proc, 11, 540), _own(proc, 12, 340)
    assert watch.stop() == {}
    watch.start()
    clock.now += 0.5
    _busy(proc, 1104, steal_ticks=30)  # busy time counts steal too
    assert watch.stop() == {"steal": pytest.approx(30 * tick)}


def test_without_own_pids_other_processes_are_not_watched(tmp_path):
    proc, clock = _proc(tmp_path, "0::/\n", ""), FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2)
    _busy(proc, 1000)
    watch.start()
    clock.now += 0.5
    _busy(proc, 1500)  # a whole CPU busy, but nothing says whose
    assert watch.stop() == {}


@settings(max_examples=200, deadline=None)
@given(cpus=st.integers(1, 16), threads=st.integers(1, 16), foreign_ticks=st.integers(0, 2000),
       wall_ticks=st.integers(10, 200))
def test_other_processes_count_only_beyond_the_cores_the_threads_leave_idle(
        tmp_path_factory, cpus, threads, foreign_ticks, wall_ticks):
    tmp_path = tmp_path_factory.mktemp("proc")
    proc, clock = _proc(tmp_path, "0::/\n", ""), FakeClock()
    tick = 1 / os_causes.ticks_per_second()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=cpus,
                        own_pids=lambda: [11], threads=threads)
    _busy(proc, 1000), _own(proc, 11, 500)
    watch.start()
    wall = wall_ticks * tick
    clock.now += wall
    _busy(proc, 1000 + foreign_ticks), _own(proc, 11, 500)
    threads_in_use = min(threads, cpus)
    spilled = foreign_ticks * tick - (cpus + 1) * tick - (cpus - threads_in_use) * wall
    expected = spilled > 0.01 * wall * threads_in_use
    assert ("foreign" in watch.stop()) == expected
    # Foreign work that fits in the idle cores never sets a one-threaded round aside.
    if threads_in_use < cpus and foreign_ticks * tick <= (cpus - threads_in_use) * wall:
        assert not expected


def _two_cpu_watch_after_a_round(tmp_path):
    """A watch on a v1 cgroup of two CPUs, 100 ms into its first round (started at 0)."""
    proc, root = _v1_tree(tmp_path, "job")
    clock = FakeClock()
    watch = RoundCauses(share=0.01, proc=proc, sys=tmp_path / "sys", clock=clock, cpus=2)
    watch.start()
    clock.now += 0.100
    return watch, root / "job" / "cpu.stat", clock


def test_a_throttle_that_began_in_a_round_and_ended_after_it_sets_that_round_aside(tmp_path):
    # The kernel adds a throttle's time when the throttle ends: a round that ended mid-throttle
    # reads nothing. The next reading shows more throttled time than has passed since it.
    watch, stat, clock = _two_cpu_watch_after_a_round(tmp_path)
    assert watch.stop() == {} and watch.earlier_rounds == {}  # throttled from 0.07, no sign yet
    clock.now += 0.005  # the gap between rounds
    watch.start()
    clock.now += 0.050
    # 170 ms of throttled time on two CPUs: a throttle of at least 85 ms that ended by now
    # (0.155), so it began by 0.070, at least 30 ms before the first round ended (0.100).
    stat.write_text(f"nr_periods 2\nnr_throttled 1\nthrottled_time {170_000_000}\n")
    assert "throttled" in watch.stop()  # the round it ended in
    assert watch.earlier_rounds[1]["throttled"] == pytest.approx(0.030, abs=1e-9)
    # A throttle wholly inside the next round says nothing about the round before it (the
    # first throttle, traced again from the readings before, still covers the first round).
    watch.start()
    clock.now += 0.100
    stat.write_text(f"nr_periods 3\nnr_throttled 2\nthrottled_time {170_000_000 + 40_000_000}\n")
    assert "throttled" in watch.stop() and 1 not in watch.earlier_rounds
    assert watch.earlier_rounds[2]["throttled"] == pytest.approx(0.030, abs=1e-9)


def test_a_throttle_that_ended_between_rounds_is_traced_back_into_every_round_it_covered(
        tmp_path):
    # Read at both ends of each round: throttled time that grew in the gap between two rounds
    # (while the runner moved on) surely covered [reading - growth / CPUs, the reading before].
    # Read only at the rounds' ends, the 15 ms of the first round below went unseen: the time
    # since that round ended (gap and next round, 55 ms) is longer than the 20 ms it proves.
    watch, stat, clock = _two_cpu_watch_after_a_round(tmp_path)
    assert watch.stop() == {}
    clock.now += 0.005
    stat.write_text(f"nr_periods 1\nnr_throttled 1\nthrottled_time {40_000_000}\n")
    watch.start()  # at 0.105: at least 20 ms of throttle, from 0.085 on
    assert watch.earlier_rounds == {1: {"throttled": pytest.approx(0.015, abs=1e-9)}}
    clock.now += 0.050
    assert watch.stop() == {} and watch.earlier_rounds[1]["throttled"] == pytest.approx(0.015)
    # One long throttle that ended in the next gap covered both rounds before it.
    clock.now += 0.005
    stat.write_text(f"nr_periods 2\nnr_throttled 2\nthrottled_time {40_000_000 + 300_000_000}\n")
    watch.start()  # at 0.160: at least 150 ms, from 0.010 on
    assert watch.earlier_rounds[1]["throttled"] == pytest.approx(0.050, abs=1e-9)  # 0.105-0.155
    assert watch.earlier_rounds[2]["throttled"] == pytest.approx(0.090, abs=1e-9)  # 0.010-0.100


def test_the_sampler_sets_aside_the_round_a_throttle_spilled_back_into():
    from qkbench.measure.timing import Sample, StopRule, interleave

    class Watch:
        def __init__(self):
            self.round, self.earlier_rounds, self.last_shares = -1, {}, {}

        def start(self):
            self.round += 1

        def stop(self):
            # Round 4 reads a throttle that began in round 3; round 7 one that ended between
            # rounds and covered round 5 (two back) alone.
            self.earlier_rounds = {4: {1: {"throttled": 0.03}},
                                   7: {2: {"throttled": 0.02}}}.get(self.round, {})
            return {"throttled": 0.05} if self.round == 4 else {}

    def sampler(count, round_number):
        return [Sample(round_number, 0.0, 1.0, 1) for _ in range(count)]

    rule = StopRule(target_rel_ci=1e-9, budget_s=1e9, max_samples=12, min_samples=10)
    result = interleave({"a": sampler, "b": sampler}, {"a": 1.0, "b": 1.0}, rule,
                        min_rounds=8, round_watch=Watch())
    for name in ("a", "b"):
        assert set(result[name].caused_rounds) == {3, 4, 5}
        assert result[name].caused_rounds[3] == {"throttled": 0.03}
        assert result[name].caused_rounds[5] == {"throttled": 0.02}
