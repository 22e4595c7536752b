"""The physical CPU ceiling from ISA facts: each factor and where it came from."""

from __future__ import annotations

import pytest

from qkbench.machine.cpu_peak import CpuFacts, physical_peak, read_facts, with_measured

EMERALD_RAPIDS = CpuFacts(vendor="GenuineIntel", family=6, model=0xCF,
                          model_name="INTEL(R) XEON(R) PLATINUM 8581C CPU @ 2.30GHz",
                          flags=frozenset({"sse2", "avx", "avx2", "fma", "avx512f",
                                           "avx512_bf16", "amx_bf16", "amx_tile"}),
                          cpu_mhz=2300.0, cores=2, machine="x86_64")
ZEN4 = CpuFacts(vendor="AuthenticAMD", family=0x19, model=0x11, model_name="AMD EPYC 9B14",
                flags=frozenset({"avx2", "fma", "avx512f"}), cpu_mhz=2600.0, cores=4,
                machine="x86_64")


def test_a_xeon_with_avx512_has_two_512_bit_units_per_core():
    peak = physical_peak("float32", EMERALD_RAPIDS)
    assert peak.gflops == pytest.approx(2 * 2 * 16 * 2 * 2.3)
    assert peak.factors["lanes"][0] == 16 and "avx512f" in peak.factors["lanes"][1]
    assert "model string" in peak.factors["clock_ghz"][1]
    assert physical_peak("float64", EMERALD_RAPIDS).gflops == pytest.approx(peak.gflops / 2)


def test_amx_sets_the_bfloat16_ceiling():
    peak = physical_peak("bfloat16", EMERALD_RAPIDS)
    assert peak.gflops == pytest.approx(2 * 1024 * 2 * 2.3)
    assert "AMX" in peak.factors["fma_units_per_core"][1]


def test_zen4_runs_avx512_on_256_bit_pipes():
    peak = physical_peak("float32", ZEN4)
    assert peak.factors["lanes"][0] == 8  # not 16: the datapath caps the ISA width
    assert "256-bit datapath" in peak.factors["lanes"][1]
    assert peak.gflops == pytest.approx(4 * 2 * 8 * 2 * 2.6)


def test_a_core_missing_from_the_table_gets_an_upper_bound():
    facts = CpuFacts(vendor="HygonGenuine", family=0x18, model=1, flags=frozenset({"avx2"}),
                     cpu_mhz=2000.0, cores=2, machine="x86_64")
    peak = physical_peak("float32", facts)
    assert peak.factors["fma_units_per_core"][0] == 2
    assert "not in the table" in peak.factors["fma_units_per_core"][1]


def test_half_precision_without_native_arithmetic_counts_float32_lanes():
    assert physical_peak("bfloat16", ZEN4).gflops == physical_peak("float32", ZEN4).gflops


def test_no_readable_clock_means_no_ceiling_rather_than_a_guess():
    assert physical_peak("float32", CpuFacts(flags=frozenset({"avx2"}))) is None


def test_a_measured_product_faster_than_the_reported_clock_allows_raises_the_clock():
    peak = physical_peak("float32", ZEN4)
    raised = with_measured(peak, 1.2 * peak.gflops)
    assert raised.gflops == pytest.approx(1.2 * peak.gflops)
    assert "implied by the measured product" in raised.factors["clock_ghz"][1]
    assert with_measured(peak, 0.5 * peak.gflops) is peak


def test_this_machine_has_a_ceiling_with_every_factor_explained():
    facts = read_facts()
    peak = physical_peak("float32", facts)
    if peak is None:
        pytest.skip("this machine reports no clock")
    assert peak.gflops > 0 and all(how for _, how in peak.factors.values())
    assert peak.factors["cores"][0] == facts.cores


def test_a_row_faster_than_the_physical_peak_is_flagged_not_shown():
    from qkbench.measure.timing import Sample, SamplingResult
    from qkbench.plan.sweep import Cell, Shape, Variant
    from qkbench.records.results import summary_row

    cell = Cell.of("numpy", Shape(64, 64, 64), Variant("float32"))
    sampling = SamplingResult([Sample(0, 0.0, 1e-6, 1) for _ in range(10)], "converged",
                              min_samples=6)
    row = summary_row(cell, "cpu", "ok", sampling=sampling, peak_gflops=1.0)  # 524 GFLOP/s
    assert row["above_peak"] is True and row["pct_peak"] is None
    row = summary_row(cell, "cpu", "ok", sampling=sampling, peak_gflops=1000.0)
    assert row["above_peak"] is False and row["pct_peak"] == pytest.approx(52.4288)


def test_a_vm_s_nominal_clock_gets_the_boost_allowance():
    from qkbench.machine.cpu_peak import VM_BOOST_ALLOWANCE

    vm = CpuFacts(vendor="AuthenticAMD", family=0x19, model=0x1, model_name="AMD EPYC",
                  flags=frozenset({"avx2", "fma", "hypervisor"}), cpu_mhz=2445.0, cores=2,
                  machine="x86_64")
    peak = physical_peak("float32", vm)
    assert peak.factors["clock_ghz"][0] == pytest.approx(2.445 * VM_BOOST_ALLOWANCE, abs=1e-3)
    assert "boost" in peak.factors["clock_ghz"][1]
    bare = CpuFacts(**{**vm.__dict__, "flags": frozenset({"avx2", "fma"})})
    assert physical_peak("float32", bare).factors["clock_ghz"][0] == pytest.approx(2.445)
