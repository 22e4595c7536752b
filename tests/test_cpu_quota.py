"""The cores qkbench may use: the cgroup CPU quota (v1 and v2, nested, in a container) next to
the affinity mask — on fake /proc and cgroup trees laid out like Linux's, and in a real cgroup
this test makes (skipped where none can be made)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkbench.machine import cpu_quota
from qkbench.machine.cpu_quota import CpuLimits, cpu_cgroup_folders, cpu_limits, smallest_quota
from tests.conftest import REPO, cli_env, write_config


def _proc(base: Path, cgroup: str, mountinfo: str) -> Path:
    proc = base / "proc"
    (proc / "self").mkdir(parents=True, exist_ok=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    return proc


def _v1(base: Path, path: str, quotas: dict[str, tuple[int, int] | None],
        mount_root: str = "/") -> Path:
    """A v1 cpu hierarchy at <base>/cgroup/cpu with the process in `path`; `quotas` maps a
    folder (relative to the mount, '' = its root) to (quota µs, period µs), None for -1."""
    mount = base / "cgroup" / "cpu"
    for folder, quota in quotas.items():
        where = mount / folder
        where.mkdir(parents=True, exist_ok=True)
        q, p = quota if quota is not None else (-1, 100000)
        (where / "cpu.cfs_quota_us").write_text(f"{q}\n")
        (where / "cpu.cfs_period_us").write_text(f"{p}\n")
    info = (f"30 25 0:26 {mount_root} {mount} rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
            f"31 25 0:27 / {base / 'cgroup' / 'memory'} rw - cgroup cgroup rw,memory\n")
    return _proc(base, f"5:memory:/other\n3:cpu,cpuacct:{path}\n0::/\n", info)


def _v2(base: Path, path: str, limits: dict[str, str | None], mount_root: str = "/") -> Path:
    """A v2 hierarchy at <base>/cgroup; `limits` maps a folder to cpu.max's text (None: the
    file is missing, as in the root cgroup)."""
    mount = base / "cgroup"
    for folder, text in limits.items():
        where = mount / folder
        where.mkdir(parents=True, exist_ok=True)
        if text is not None:
            (where / "cpu.max").write_text(text + "\n")
    info = f"25 20 0:23 {mount_root} {mount} rw - cgroup2 cgroup2 rw\n"
    return _proc(base, f"0::{path}\n", info)


def test_v1_nested_takes_the_smallest_quota_on_the_way_up(tmp_path):
    proc = _v1(tmp_path, "/kubepods/pod1/ctr", {"": None, "kubepods": None,
                                                 "kubepods/pod1": (150000, 100000),
                                                 "kubepods/pod1/ctr": (400000, 100000)})
    version, folders = cpu_cgroup_folders(proc)
    mount = tmp_path / "cgroup" / "cpu"
    assert version == "v1"
    assert folders == [mount / "kubepods/pod1/ctr", mount / "kubepods/pod1", mount / "kubepods",
                       mount]
    cores, source = smallest_quota((version, folders))
    assert cores == 1.5
    assert source == str(mount / "kubepods/pod1" / "cpu.cfs_quota_us")


def test_v1_minus_one_everywhere_is_no_quota(tmp_path):
    proc = _v1(tmp_path, "/job", {"": None, "job": None})
    assert smallest_quota(cpu_cgroup_folders(proc)) is None
    assert cpu_limits(proc).quota_cores is None
    assert cpu_limits(proc).usable == cpu_quota.affinity_cores()


def test_v2_max_is_no_limit_and_a_parent_limit_counts(tmp_path):
    proc = _v2(tmp_path, "/system.slice/docker-1.scope",
               {"": None, "system.slice": "250000 100000",
                "system.slice/docker-1.scope": "max 100000"})
    cores, source = smallest_quota(cpu_cgroup_folders(proc))
    assert cores == 2.5
    assert source.endswith("system.slice/cpu.max")


def test_v2_quota_without_a_period_uses_the_kernels_default(tmp_path):
    proc = _v2(tmp_path, "/a", {"": None, "a": "50000"})
    assert smallest_quota(cpu_cgroup_folders(proc))[0] == 0.5


def test_a_container_sees_its_own_cgroup_as_the_mount_root(tmp_path):
    # Docker without a cgroup namespace: /proc/self/cgroup names the host's path, the mount's
    # root is that same path, and the container's cgroup is the mount point itself.
    proc = _v2(tmp_path, "/docker/abc", {"": "120000 100000"}, mount_root="/docker/abc")
    cores, source = smallest_quota(cpu_cgroup_folders(proc))
    assert cores == 1.2
    assert Path(source) == tmp_path / "cgroup" / "cpu.max"


def test_missing_and_unreadable_files_mean_no_quota(tmp_path):
    assert cpu_cgroup_folders(tmp_path / "nothing") == ("", [])
    proc = _v2(tmp_path / "a", "/x", {"": None, "x": None})  # no cpu.max anywhere
    assert smallest_quota(cpu_cgroup_folders(proc)) is None
    proc = _v2(tmp_path / "b", "/x", {"": None, "x": "garbage here"})
    assert smallest_quota(cpu_cgroup_folders(proc)) is None
    proc = _v1(tmp_path / "c", "/x", {"x": (0, 100000)})
    assert smallest_quota(cpu_cgroup_folders(proc)) is None
    # /proc/self/cgroup names a cgroup whose folder is gone (moved since): no quota, no error.
    proc = _v1(tmp_path / "d", "/gone/away", {"": None})
    assert smallest_quota(cpu_cgroup_folders(proc)) is None


def test_v1_is_preferred_in_a_hybrid_layout(tmp_path):
    proc = _v1(tmp_path, "/job", {"": None, "job": (100000, 100000)})
    info = (proc / "self" / "mountinfo").read_text()
    (proc / "self" / "mountinfo").write_text(
        info + f"41 31 0:38 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw\n")
    (proc / "self" / "cgroup").write_text("3:cpu,cpuacct:/job\n0::/\n")
    assert cpu_limits(proc).quota_cores == 1.0


def test_without_a_cpu_controller_in_v1_the_v2_tree_is_read(tmp_path):
    proc = _v2(tmp_path, "/x", {"": None, "x": "300000 100000"})
    info = (proc / "self" / "mountinfo").read_text()
    (proc / "self" / "mountinfo").write_text(
        info + f"31 25 0:27 / {tmp_path / 'mem'} rw - cgroup cgroup rw,memory\n")
    assert cpu_limits(proc).quota_cores == 3.0


@settings(max_examples=200, deadline=None)
@given(affinity=st.integers(1, 256), quota=st.none() | st.floats(0.01, 512.0))
def test_usable_cores_are_the_smaller_of_mask_and_whole_quota(affinity, quota):
    limits = CpuLimits(affinity, quota, None if quota is None else "cpu.max")
    expected = affinity if quota is None else min(affinity, max(1, math.floor(quota)))
    assert limits.usable == expected
    assert 1 <= limits.usable <= affinity
    assert limits.quota_binds == (limits.usable < affinity)
    measured = limits.quota_measured(limits.usable)
    if quota is None or quota >= affinity:
        assert measured is None
    else:
        # The usable cores fit the quota unless it is below one core; one more never does.
        assert measured == (limits.usable > quota)
        assert limits.quota_measured(math.floor(quota) + 1) is True


@settings(max_examples=60, deadline=None)
@given(chain=st.lists(st.none() | st.tuples(st.integers(1000, 10**7), st.integers(1000, 10**6)),
                      min_size=1, max_size=5),
       version=st.sampled_from(["v1", "v2"]))
def test_the_smallest_quota_of_any_nesting_is_found(tmp_path_factory, chain, version):
    base = tmp_path_factory.mktemp("tree")
    names = [f"l{i}" for i in range(len(chain))]
    folders = ["/".join(names[:i + 1]) for i in range(len(chain))]
    path = "/" + folders[-1]
    if version == "v1":
        proc = _v1(base, path, {"": None, **dict(zip(folders, chain))})
    else:
        texts = {f: None if q is None else f"{q[0]} {q[1]}" for f, q in zip(folders, chain)}
        proc = _v2(base, path, {"": None, **texts})
    found = smallest_quota(cpu_cgroup_folders(proc))
    quotas = [q / p for q, p in (c for c in chain if c is not None)]
    if not quotas:
        assert found is None
    else:
        assert found is not None and found[0] == pytest.approx(min(quotas))


# ---------------------------------------------------------------------------------------------
# A real cgroup

V1_CPU = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _make_cgroup(quota_cores: float) -> Path | None:
    name = f"qkbench-quota-{os.getpid()}"
    if (V1_CPU / "cpu.cfs_quota_us").exists():
        folder, files = V1_CPU / name, {"cpu.cfs_period_us": str(PERIOD_US),
                                        "cpu.cfs_quota_us": str(int(quota_cores * PERIOD_US))}
    elif "cpu" in _read(V2_ROOT / "cgroup.subtree_control").split():
        folder, files = V2_ROOT / name, {"cpu.max": f"{int(quota_cores * PERIOD_US)} {PERIOD_US}"}
    else:
        return None
    try:
        folder.mkdir()
        for file, text in files.items():
            (folder / file).write_text(text)
    except OSError:
        _remove(folder)
        return None
    return folder


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _remove(folder: Path) -> None:
    for pid in _read(folder / "cgroup.procs").split():
        try:
            (folder.parent / "cgroup.procs").write_text(pid)
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass


@pytest.fixture
def quota_cgroup():
    if not sys.platform.startswith("linux") or cpu_quota.affinity_cores() < 2:
        pytest.skip("needs Linux and at least two CPUs in the affinity mask")
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    folder = _make_cgroup(1.5)
    if folder is None:
        pytest.skip("no writable cgroup cpu controller here")
    try:
        yield folder
    finally:
        _remove(folder)
    assert not folder.exists(), "the test's cgroup was left behind"


def test_a_process_in_a_real_one_and_a_half_core_cgroup_reports_one_usable_core(quota_cgroup):
    code = ("import json; from qkbench.machine.cpu_quota import cpu_limits; "
            "print(json.dumps(cpu_limits().as_record()))")
    wrapper = f'echo $$ > {quota_cgroup / "cgroup.procs"} && exec "$@"'
    result = subprocess.run(["sh", "-c", wrapper, "sh", sys.executable, "-c", code], cwd=REPO,
                            env=cli_env(), capture_output=True, text=True, timeout=60,
                            check=True)
    record = json.loads(result.stdout)
    assert record["quota_cores"] == 1.5
    assert record["usable_cores"] == 1
    assert Path(record["quota_source"]).parent == quota_cgroup
    # The same code outside it reads what this test's own cgroup allows, not the new one.
    outside = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(),
                             capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(outside.stdout) == cpu_limits().as_record()


def _run_in(cgroup: Path, tmp_path: Path, name: str, **sweep) -> tuple[Any, str]:
    import pandas as pd

    folder = tmp_path / name
    folder.mkdir()
    config = write_config(folder, ["numpy"], n=[256], d_k=[64], dtype=["float32"],
                          timing={"budget_s": 0.3, "min_samples": 6, "machine_check": False},
                          **sweep)
    out = folder / "run"
    wrapper = f'echo $$ > {cgroup / "cgroup.procs"} && exec "$@"'
    command = ["sh", "-c", wrapper, "sh", sys.executable, "-m", "qkbench", "run", str(config),
               "--out", str(out), "--quiet", "--no-plots"]
    result = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True,
                            timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["environment"]["cpu"]["usable_cores"] == 1
    assert meta["environment"]["cpu"]["quota_cores"] == 1.5
    return pd.read_parquet(out / "summary.parquet"), result.stderr


def test_under_a_real_quota_default_cells_run_on_the_usable_core_and_two_threads_say_so(
        quota_cgroup, tmp_path):
    default, note = _run_in(quota_cgroup, tmp_path, "default")
    assert (default["status"] == "ok").all()
    assert (default["threads"] == 1).all(), default[["backend", "threads"]]
    assert not default["quota_measured"].any()
    assert "quota" not in note
    asked, note = _run_in(quota_cgroup, tmp_path, "two", threads=[2])
    assert (asked["status"] == "ok").all()
    assert (asked["threads"] == 2).all()
    assert asked["quota_measured"].all()
    assert "measure the quota, not the hardware" in note


class _Pool:
    """A CPU backend whose library defaults to `default` threads."""

    device = "cpu"

    def __init__(self, default):
        self.default, self.calls = default, []

    def set_threads(self, count):
        self.calls.append(count)

    def info(self):
        return {} if self.default is None else {"threads": self.default}


@settings(max_examples=100, deadline=None)
@given(affinity=st.integers(1, 64), quota=st.none() | st.floats(0.1, 80.0),
       default=st.none() | st.integers(1, 64))
def test_library_default_cells_run_on_the_usable_cores_only_when_the_quota_binds(
        affinity, quota, default):
    from qkbench.measure import session

    limits = CpuLimits(affinity, quota, "cpu.max")
    original = session.cpu_limits
    session.cpu_limits = lambda: limits
    try:
        chosen = session.quota_threads(_Pool(default))
    finally:
        session.cpu_limits = original
    if not limits.quota_binds or (default is not None and default <= limits.usable):
        assert chosen is None  # the library's own default stands
    else:
        assert chosen == limits.usable
