"""The variables that change what a library computes, the warnings for those that hold a library
below the CPU, and the microarchitecture name — on faked environments and CPUs (the real
environment's OPENBLAS_* are never changed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkbench.machine import environment, library_env, microarch
from qkbench.machine.cpu_peak import CpuFacts

archspec = pytest.importorskip("archspec.cpu")


def test_library_variables_keep_what_changes_numbers_and_drop_paths_and_logs():
    environ = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512",
               "OMP_NUM_THREADS": "1", "NUMBA_CACHE_DIR": "/tmp/x", "TORCH_LOGS": "dynamo",
               "MKL_VERBOSE": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
               "NVIDIA_TF32_OVERRIDE": "0", "HOME": "/root", "PATH": "/bin",
               "KMP_DUPLICATE_LIB_OK": "True", "OMP_DISPLAY_ENV": "true"}
    assert library_env.library_variables(environ) == {
        "NVIDIA_TF32_OVERRIDE": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell",
        "OPENBLAS_L2_SIZE": "512", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}


@pytest.mark.parametrize("core,bits", [("Haswell", 256), ("SkylakeX", 512), ("Zen", 256),
                                       ("Sandybridge", 256), ("znver4", 512),
                                       ("skylake-avx512", 512), ("Nehalem", 128),
                                       ("NoSuchCore", None)])
def test_a_named_cores_vector_width_comes_from_archspec(core, bits):
    assert library_env.core_bits(core) == bits


def test_openblas_haswell_on_an_avx512_cpu_warns_in_one_line():
    lines = library_env.warnings({"OPENBLAS_CORETYPE": "Haswell"}, cpu_bits=512, usable_cores=2)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("warning: OPENBLAS_CORETYPE=Haswell holds OpenBLAS to 256-bit")
    # The same setting on an AVX2 CPU holds nothing back.
    assert library_env.warnings({"OPENBLAS_CORETYPE": "Haswell"}, 256, 2) == []
    assert library_env.warnings({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, 512, 2)
    assert library_env.warnings({"MKL_ENABLE_INSTRUCTIONS": "AVX512"}, 512, 2) == []


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(library_env.THREAD_VARIABLES), threads=st.integers(1, 64),
       usable=st.integers(1, 64), nested=st.booleans())
def test_a_thread_cap_below_the_usable_cores_warns_and_none_other_does(name, threads, usable,
                                                                       nested):
    value = f"{threads},1" if nested else str(threads)
    lines = library_env.warnings({name: value}, cpu_bits=512, usable_cores=usable)
    assert len(lines) == (1 if threads < usable else 0)
    if lines:
        assert f"{name}={value}" in lines[0] and f"{usable} usable cores" in lines[0]


def test_library_variables_are_part_of_the_comparability_key_not_the_hardware_key():
    facts = environment.fingerprint()
    changed = {**facts, "library_env": {**facts["library_env"], "OMP_NUM_THREADS": "1"}}
    assert environment.digest(changed, environment.HARDWARE_FIELDS) == facts["hardware_key"]
    assert environment.digest(changed, environment.HARDWARE_FIELDS
                              + environment.SOFTWARE_FIELDS) != facts["comparability_key"]
    assert any("library_env.OMP_NUM_THREADS" in line
               for line in environment.differences(facts, changed))


ZEN5_VM = CpuFacts(vendor="AuthenticAMD", family=0x1A, model=0x02, stepping=1,
                   model_name="AMD EPYC", flags=frozenset("avx avx2 fma avx512f".split()))


def test_a_vm_that_hides_flags_is_named_from_its_family_when_archspec_agrees(monkeypatch):
    monkeypatch.setattr(archspec, "host", lambda: archspec.TARGETS["x86_64_v4"])
    found = microarch.describe(ZEN5_VM)
    assert found["microarchitecture"] == "zen5"
    assert (found["family"], found["model_number"], found["stepping"]) == (26, 2, 1)
    assert "archspec matches only the generic x86_64_v4" in found["microarchitecture_how"]


def test_archspecs_own_name_wins_and_the_flags_a_vm_hides_are_named(monkeypatch):
    monkeypatch.setattr(archspec, "host", lambda: archspec.TARGETS["zen4"])
    assert microarch.describe(ZEN5_VM)["microarchitecture"] == "zen4"
    # A hypervisor that masks AVX-512 too: the core is still the family's, and its record
    # says which of the core's flags the machine does not show.
    monkeypatch.setattr(archspec, "host", lambda: archspec.TARGETS["x86_64_v3"])
    masked = CpuFacts(vendor="AuthenticAMD", family=0x1A, model=0x02, stepping=1,
                      flags=frozenset("avx avx2 fma".split()))
    found = microarch.describe(masked)
    assert found["microarchitecture"] == "zen5"
    assert "avx512f" in found["microarchitecture_how"]


def test_an_unknown_vendor_keeps_archspecs_generic_name(monkeypatch):
    monkeypatch.setattr(archspec, "host", lambda: archspec.TARGETS["x86_64_v2"])
    other = CpuFacts(vendor="HygonGenuine", family=0x18, model=1)
    assert microarch.describe(other)["microarchitecture"] == "x86_64_v2"
