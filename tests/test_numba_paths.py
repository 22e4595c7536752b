"""How the `numba` kernel's path is chosen, and that Numba's cache never mixes paths or ISAs.

The choice tests are cheap. The cache tests run fresh processes on an empty NUMBA_CACHE_DIR,
so they pay a cold compile per path or ISA (about 10 s each) and carry the `slow` marker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qkbench.backends import numba_paths
from qkbench.backends.numba_paths import PATHS, Geometry, path_for_features, select

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("features, path", [
    ("+avx512f,+avx2,+fma,+avx", "avx512"),
    ("-avx512f,+avx2,+fma,+avx", "avx2"),
    ("+avx2,-fma", "portable"),  # AVX2 without FMA: the tile would be multiply-then-add
    ("+neon,+sve,+fp-armv8", "portable"),
    ("", "portable"),  # NUMBA_CPU_NAME=generic compiles for no features at all
])
def test_path_follows_the_features_the_jit_targets(features: str, path: str) -> None:
    assert path_for_features(features) == path


def test_option_beats_environment_beats_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numba_paths, "detected_path", lambda: "avx512")
    monkeypatch.delenv(numba_paths.ENV_VAR, raising=False)
    assert select().name == "avx512"
    assert select("auto").name == "avx512"
    monkeypatch.setenv(numba_paths.ENV_VAR, "portable")
    assert select().name == "portable"
    assert select("avx2").name == "avx2"


def test_unknown_path_is_refused_when_the_backend_is_built() -> None:
    pytest.importorskip("numba")
    from qkbench.backends.numba_backend import NumbaBackend

    with pytest.raises(ValueError, match="avx512, avx2, portable"):
        NumbaBackend(path="sse9")
    with pytest.raises(ValueError, match="unknown numba path"):
        select("sse9")


def test_geometries_fit_the_kernel() -> None:
    for g in PATHS.values():
        for itemsize in (4, 8):
            assert g.block_cols % g.columns(itemsize) == 0
        assert g.block_rows % g.rows == 0
    with pytest.raises(ValueError, match="rows"):
        Geometry("bad", rows=3, tile_bytes=64, block_rows=63, block_cols=256, vector_bits=0)


def test_info_records_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba")
    from qkbench.backends.numba_backend import NumbaBackend

    monkeypatch.setenv(numba_paths.ENV_VAR, "portable")
    info = NumbaBackend().info()
    assert info["numba_path"] == "portable"
    assert info["numba_cpu"] == numba_paths.jit_target()[0]


def _python(code: str, env: dict[str, str]) -> str:
    return _pythons(code, [env])[0]


def _pythons(code: str, envs: list[dict[str, str]]) -> list[str]:
    """The last line `code` prints in a fresh process per environment, the processes side by
    side (a cold compile keeps one core busy for ~10 s)."""
    return [_finish(process) for process in [_start(code, env) for env in envs]]


def _start(code: str, env: dict[str, str]) -> subprocess.Popen:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                            env={**os.environ, **env, "PYTHONPATH": path},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> str:
    try:
        stdout, stderr = process.communicate(timeout=240)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    return stdout.strip().splitlines()[-1]


def test_detection_honours_numba_cpu_overrides() -> None:
    pytest.importorskip("numba")
    code = "from qkbench.backends.numba_paths import detected_path; print(detected_path())"
    env = {"NUMBA_CPU_FEATURES": "+avx2,+fma,+avx,-avx512f"}
    assert _python(code, env) == "avx2"
    assert _python(code, {"NUMBA_CPU_NAME": "generic"}) == "portable"


# One call of the kernel in a fresh process; prints whether Numba's cache served it.
_CALL = """
import json, time, numpy as np
from qkbench.backends.numba_backend import NumbaBackend
from qkbench.backends import numba_kernels
q, k = np.ones((9, 5)), np.ones((11, 5))
start = time.perf_counter()
s = NumbaBackend().scores(q, k)
seconds = time.perf_counter() - start
assert (s == 5).all()
stats = numba_kernels.blocked.stats
hits, misses = sum(stats.cache_hits.values()), sum(stats.cache_misses.values())
print(json.dumps({"hits": hits, "misses": misses, "seconds": seconds}))
"""


@pytest.mark.slow
def test_cache_is_keyed_by_path_and_isa(tmp_path: Path, avx512_asm) -> None:
    """A second process loads the kernel; another path or another ISA compiles its own.
    (`avx512_asm`: only started here, to share the cores; see that fixture.)"""
    pytest.importorskip("numba")
    from numba.core.codegen import get_host_cpu_features

    def env(cache: Path, path: str, **extra: str) -> dict[str, str]:
        return {"NUMBA_CACHE_DIR": str(cache), numba_paths.ENV_VAR: path, **extra}

    def calls(*envs: dict[str, str]) -> list[dict[str, float]]:
        return [json.loads(line) for line in _pythons(_CALL, list(envs))]

    first, second = tmp_path / "first", tmp_path / "second"
    assert calls(env(first, "avx2"))[0]["misses"] == 1
    # Two caches holding the avx2 entry: the other path and the other ISA compile side by side
    # without writing to one cache at once.
    shutil.copytree(first, second)
    # Same path, other ISA (AVX2 and FMA off): Numba's index key holds the CPU features.
    other_isa = get_host_cpu_features().replace("+avx2", "-avx2").replace("+fma", "-fma")
    warm, portable, isa = calls(env(first, "avx2"), env(first, "portable"),
                                env(second, "avx2", NUMBA_CPU_FEATURES=other_isa))
    assert (warm["hits"], warm["misses"]) == (1, 0)  # loaded, not compiled (time it in
    # benchmarks/numba_vs_blas.py: a shared machine's load makes a bound here flaky)
    assert portable["misses"] == 1  # same ISA, other geometry: not the avx2 entry
    assert isa["misses"] == 1
    assert calls(env(second, "avx2"))[0]["hits"] == 1  # and the host's entry is still there


# Compiled (not run) for an AVX-512 Xeon; prints the hot block's FMAs, zmm FMAs, stack accesses.
_AVX512_ASM = """
import re, numpy as np
from numba import typeof
from numba.core import config
from qkbench.backends import numba_kernels
from qkbench.backends.numba_paths import PATHS
g = PATHS["avx512"]
a2, a3 = typeof(np.empty((2, 2), np.float32)), typeof(np.empty((2, 2, 2), np.float32))
sig = (a2, a2, a3, a3, a2, typeof(g))
config.SLP_VECTORIZE = 1
numba_kernels.blocked.compile(sig)
asm = numba_kernels.blocked.inspect_asm(sig)
hot = max(re.split(r"\\n(?=\\.LBB\\d+_\\d+:)", asm), key=lambda b: b.count("vfmadd"))
fmas = [line for line in hot.splitlines() if "vfmadd" in line]
print(len(fmas), sum("zmm" in f for f in fmas), sum("rsp" in line for line in hot.splitlines()))
"""


@pytest.fixture(scope="module")
def avx512_asm(tmp_path_factory: pytest.TempPathFactory):
    """The process of the AVX-512 assembly check, started the first time a test asks for it:
    the cache test asks, so that this compile (one core, ~15 s) runs beside that test's first
    cold compile, which has the other core to itself otherwise. Yields a function that waits
    for the process and returns what it printed."""
    pytest.importorskip("numba")
    features = "+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx512cd,+avx2,+fma,+avx,+f16c,+bmi2"
    env = {"NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp("avx512-cache")),
           "NUMBA_CPU_NAME": "sapphirerapids", "NUMBA_CPU_FEATURES": features}
    process = _start(_AVX512_ASM, env)
    yield lambda: _finish(process)
    process.kill()


@pytest.mark.slow
def test_avx512_path_compiles_to_512_bit_fmas(avx512_asm) -> None:
    """Compiled (not run) for an AVX-512 Xeon: the tile's FMAs are zmm ones and none spill.

    Without the path's prefer-vector-width request, LLVM gives Sapphire Rapids 256-bit FMAs.
    """
    fmas, zmm, stack = map(int, avx512_asm().split())
    assert fmas == 16 and zmm == 16 and stack == 0  # 8 rows × 2 zmm per step t, in registers
