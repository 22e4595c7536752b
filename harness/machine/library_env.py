"""Environment variables that change what a library computes with, and the ones that hold it back.

An image can pin a library below the CPU it runs on: `OPENBLAS_CORETYPE=Haswell` makes OpenBLAS
run its AVX2 kernels on an AVX-512 CPU (on the 2-vCPU Zen 5 VM, numba then looked 1.84x faster
than NumPy; 1.12-1.15x with it unset), `OMP_NUM_THREADS=1` holds every OpenMP pool to one core.
Such a run is still a true measurement of that environment, but not of the machine, and not
comparable with a run without the variable: the variables are recorded in the fingerprint and
are part of its comparability key, and each one that holds a library below the CPU's vector
width or its usable cores gets a one-line warning.

Recorded: every variable whose name starts with a library's prefix (`PREFIXES`) or is named in
`NAMES`, less those that only say where files go or how much a library logs (`_IGNORED`): they
change no number. Vector widths of a named core come from archspec's table of
microarchitectures (the core's feature flags), so no width table of qkbench's own is needed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

PREFIXES = ("OPENBLAS_", "GOTO_", "OMP_", "GOMP_", "KMP_", "MKL_", "NUMBA_", "TORCH_", "BLIS_",
            "XLA_", "JAX_", "ONEDNN_", "DNNL_", "VECLIB_", "ATEN_", "NPY_")
NAMES = ("NVIDIA_TF32_OVERRIDE", "CUBLAS_WORKSPACE_CONFIG", "TF_ENABLE_ONEDNN_OPTS",
         "PYTORCH_TUNABLEOP_ENABLED")
# Where files go, what is logged, debugging aids: no number changes with them.
_IGNORED = re.compile(r"(KMP_DUPLICATE_LIB_OK|_DIR|_HOME|_PATH|_FILE|_CACHE.*|VERBOSE|_LOGS?|_DEBUG.*|_DUMP.*|"
                      r"_DISPLAY_ENV|_COLOR.*|_WARNINGS?)$")

# Variables that cap a library's threads; OMP_NUM_THREADS may be a nested list ("4,2").
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS",
                    "GOTO_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

# Variables that name the core a library builds or picks its kernels for, and the library.
CORE_VARIABLES = {"OPENBLAS_CORETYPE": "OpenBLAS", "NUMBA_CPU_NAME": "Numba (LLVM)"}
# Variables that name an instruction set (MKL's dispatch), and the library.
ISA_VARIABLES = {"MKL_ENABLE_INSTRUCTIONS": "MKL", "MKL_CBWR": "MKL"}

# OpenBLAS's and LLVM's names for a core that archspec spells otherwise.
_CORE_ALIASES = {"skylakex": "skylake_avx512", "skylake-avx512": "skylake_avx512",
                 "znver1": "zen", "znver2": "zen2", "znver3": "zen3", "znver4": "zen4",
                 "znver5": "zen5", "prescott": "nocona", "penryn": "core2",
                 "dunnington": "core2", "sapphirerapids": "sapphirerapids"}


def library_variables(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables in `environ` that change what a library computes, sorted by name."""
    return {name: environ[name] for name in sorted(environ)
            if (name.startswith(PREFIXES) or name in NAMES) and not _IGNORED.search(name)}


def core_bits(core: str) -> int | None:
    """The widest vector a named core (OpenBLAS's or LLVM's name) has, from archspec's table;
    None when archspec does not know the name."""
    key = core.strip().lower()
    key = _CORE_ALIASES.get(key, key).replace("-", "_")
    try:
        from archspec.cpu import TARGETS
    except ImportError:
        return None
    target = TARGETS.get(key)
    if target is None:
        return None
    for flag, bits in (("avx512f", 512), ("avx2", 256), ("avx", 256), ("sse2", 128)):
        if flag in target:
            return bits
    return None


def isa_bits(value: str) -> int | None:
    """The vector width an MKL instruction-set name allows (AVX512, AVX2, SSE4_2, …)."""
    word = value.strip().upper()
    for prefix, bits in (("AVX512", 512), ("AVX", 256), ("SSE", 128)):
        if word.startswith(prefix):
            return bits
    return None


def warnings(variables: Mapping[str, str], cpu_bits: int, usable_cores: int) -> list[str]:
    """One line per variable that holds a library below the CPU's vector width (`cpu_bits`)
    or below the usable cores."""
    out = []
    for name, library in {**CORE_VARIABLES, **ISA_VARIABLES}.items():
        value = variables.get(name)
        if value is None:
            continue
        bits = core_bits(value) if name in CORE_VARIABLES else isa_bits(value)
        if bits is not None and bits < cpu_bits:
            out.append(f"warning: {name}={value} holds {library} to {bits}-bit vectors on a "
                       f"CPU with {cpu_bits}-bit ones: its times are not this CPU's best, and "
                       "ratios to other libraries are skewed (unset it to measure the CPU)")
    for name in THREAD_VARIABLES:
        value = variables.get(name)
        threads = _first_int(value) if value is not None else None
        if threads is not None and 0 < threads < usable_cores:
            out.append(f"warning: {name}={value} holds its library to {threads} thread(s) of "
                       f"the {usable_cores} usable cores: library-default cells run on "
                       f"{threads} (unset it, or use the config's threads axis)")
    return out


def _first_int(value: str) -> int | None:
    try:
        return int(value.split(",")[0].strip())
    except ValueError:
        return None
