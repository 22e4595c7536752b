"""The CPU's physical compute ceiling: a limit no backend can beat, each factor with its source.

    peak = cores × FMA units per core × vector lanes × 2 (an FMA is two flops) × clock

* **cores** — the cores this process may use: its affinity mask, capped by its cgroup's CPU
  quota (`qkbench.machine.cpu_quota`; a container limited to 1.5 cores computes on one). SMT
  siblings share their core's FMA units, so counting logical CPUs can only overstate the
  ceiling, never understate it; a VM rarely tells which of its vCPUs are siblings, so the
  upper bound is the safe choice. A cell is held to the peak of the cores its threads could
  use (`for_threads`): a one-thread cell on eight cores to one core's peak.
* **FMA units and datapath width** — from `MICROARCHITECTURES` by vendor, family and model
  (public optimisation manuals); an unknown core gets `DEFAULT_UNITS` units of its widest
  vector, which no core in the table exceeds (an upper bound again).
* **lanes** — the widest vector the ISA flags advertise (`/proc/cpuinfo`: avx512f, avx2, avx,
  sse2; asimd, sve on Arm) divided by the dtype's width, capped by the datapath (Zen 4 runs
  AVX-512 on 256-bit units). Half precisions count 16-bit lanes only where the ISA computes in
  them (avx512_bf16, avx512_fp16, AMX); otherwise the library widens them to float32.
* **clock** — the highest of cpufreq's `cpuinfo_max_freq`, the model string's "@ x.xxGHz"
  and `cpu MHz`. A VM often reports only its nominal clock while the host boosts above it: with
  only that to go on (and the hypervisor flag), the clock gets `VM_BOOST_ALLOWANCE`; and a
  measured product that implies a faster clock (`with_measured`) raises the clock factor to
  what it implies, and says so: the ceiling stays a ceiling.

`physical_peak(dtype)` is the one entry point (the runner's percent-of-peak, issue-15's
implausible-speed check and benchmarks use it). Linux reads /proc and /sys; elsewhere the
factors fall back to `platform` and `os.cpu_count()` and say so.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from qkbench.machine.cpu_quota import cpu_limits

# (vendor, family, first model, last model) → (FMA units per core, datapath bits, source).
# The last field is archspec's name for the core where one family/model range is one core
# (qkbench.machine.microarch names a CPU by it when a VM hides the flags archspec needs).
MICROARCHITECTURES: list[tuple[str, int, int, int, int, int, str, str]] = [
    ("AuthenticAMD", 0x17, 0x00, 0x2F, 2, 128, "Zen/Zen+: two 128-bit FMA pipes", "zen"),
    ("AuthenticAMD", 0x17, 0x30, 0xFF, 2, 256, "Zen 2: two 256-bit FMA pipes", "zen2"),
    ("AuthenticAMD", 0x19, 0x00, 0x0F, 2, 256, "Zen 3 (Milan): two 256-bit FMA pipes", "zen3"),
    ("AuthenticAMD", 0x19, 0x10, 0x1F, 2, 256, "Zen 4 (Genoa): AVX-512 on two 256-bit pipes",
     "zen4"),
    ("AuthenticAMD", 0x19, 0x20, 0x5F, 2, 256, "Zen 3: two 256-bit FMA pipes", "zen3"),
    ("AuthenticAMD", 0x19, 0x60, 0xFF, 2, 256, "Zen 4: AVX-512 on two 256-bit pipes", "zen4"),
    ("AuthenticAMD", 0x1A, 0x00, 0xFF, 2, 512, "Zen 5: two 512-bit FMA pipes (server/desktop)",
     "zen5"),
    # Intel family 6: every core since Haswell has two FMA ports; server cores with AVX-512
    # (Skylake-SP to Emerald Rapids and Granite Rapids) two 512-bit ones on most SKUs.
    ("GenuineIntel", 6, 0x00, 0xFF, 2, 512, "Intel since Haswell: two FMA ports", ""),
]
DEFAULT_UNITS = 2  # x86: no core issues more than two FMAs of its widest vector per cycle
DEFAULT_ARM_UNITS = 4  # Neoverse V1/V2, Apple M-series: four 128-bit pipes
# AMX's tile unit: 1024 bf16/fp16 multiply-adds per cycle per core (Intel's AMX guide).
AMX_FMA_PER_CYCLE = 1024

# How far a host may boost above the nominal clock a VM reports (see _clock_mhz).
VM_BOOST_ALLOWANCE = 1.5

DTYPE_BITS = {"float64": 64, "float32": 32, "tf32": 32, "bfloat16": 16, "float16": 16}


@dataclass(frozen=True)
class Ceiling:
    """A physical peak in GFLOP/s and the factors it is the product of:
    name → (value, how it was found)."""

    gflops: float
    factors: dict[str, tuple[float, str]] = field(default_factory=dict)

    def as_record(self) -> dict[str, object]:
        return {"gflops": round(self.gflops, 1),
                "factors": {name: {"value": value, "how_found": how}
                            for name, (value, how) in self.factors.items()}}


@dataclass(frozen=True)
class CpuFacts:
    vendor: str = ""
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    model_name: str = ""
    flags: frozenset[str] = frozenset()
    cpu_mhz: float | None = None  # the highest `cpu MHz` over the CPUs
    max_freq_mhz: float | None = None  # cpufreq's cpuinfo_max_freq, highest over the CPUs
    cores: int = 1
    machine: str = ""
    cores_how: str = "CPUs in this process's affinity mask"


def read_facts(proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> CpuFacts:
    limits = cpu_limits()
    cores = limits.usable
    try:
        text = (proc / "cpuinfo").read_text()
    except OSError:
        return CpuFacts(model_name=platform.processor(), cores=cores,
                        machine=platform.machine(), cores_how=limits.describe())
    first: dict[str, str] = {}
    mhz: list[float] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                pass
        first.setdefault(key, value)
    freqs = []
    for path in (sys / "devices" / "system" / "cpu").glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            freqs.append(int(path.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    flags = first.get("flags") or first.get("Features") or ""
    return CpuFacts(vendor=first.get("vendor_id", ""), family=_int(first.get("cpu family")),
                    model=_int(first.get("model")), stepping=_int(first.get("stepping")),
                    model_name=first.get("model name", ""),
                    flags=frozenset(flags.split()), cpu_mhz=max(mhz) if mhz else None,
                    max_freq_mhz=max(freqs) if freqs else None, cores=cores,
                    machine=platform.machine(), cores_how=limits.describe())


def _int(text: str | None) -> int | None:
    try:
        return int(text, 0) if text is not None else None
    except ValueError:
        return None


def _vector_bits(facts: CpuFacts) -> tuple[int, str]:
    flags = facts.flags
    for flag, bits in (("avx512f", 512), ("avx2", 256), ("avx", 256), ("sse2", 128)):
        if flag in flags:
            return bits, f"{flag} in /proc/cpuinfo flags"
    if "sve" in flags:
        return 512, "sve in /proc/cpuinfo Features (vector length unknown: 512, its largest common)"
    if "asimd" in flags or facts.machine in ("aarch64", "arm64"):
        return 128, "Arm NEON (asimd)"
    return 128, "no vector flags readable: 128 bits assumed"


def _units(facts: CpuFacts) -> tuple[int, int | None, str]:
    """(FMA units per core, datapath bits or None, how found)."""
    row = table_row(facts)
    if row is not None:
        _vendor, family, _low, _high, units, bits, source, _name = row
        return units, bits, f"table: {source} (family {family:#x}, model {facts.model:#x})"
    if facts.machine in ("aarch64", "arm64") or "asimd" in facts.flags:
        return DEFAULT_ARM_UNITS, None, "not in the table: 4, the most any Arm core has"
    return DEFAULT_UNITS, None, "not in the table: 2, the most any x86 core has"


def table_row(facts: CpuFacts) -> tuple[str, int, int, int, int, int, str, str] | None:
    """The row of MICROARCHITECTURES for this CPU's vendor, family and model, or None."""
    for row in MICROARCHITECTURES:
        vendor, family, low, high = row[:4]
        if (facts.vendor == vendor and facts.family == family and facts.model is not None
                and low <= facts.model <= high):
            return row
    return None


def vector_bits(facts: CpuFacts | None = None) -> int:
    """The widest vector the CPU's ISA flags advertise, in bits."""
    return _vector_bits(facts or read_facts())[0]


def _clock_mhz(facts: CpuFacts) -> tuple[float | None, str]:
    candidates: list[tuple[float, str]] = []
    if facts.max_freq_mhz:
        candidates.append((facts.max_freq_mhz, "cpufreq cpuinfo_max_freq"))
    found = re.search(r"@\s*([0-9.]+)\s*GHz", facts.model_name)
    if found:
        candidates.append((float(found.group(1)) * 1000.0, "the model string's base clock"))
    if facts.cpu_mhz:
        candidates.append((facts.cpu_mhz, "cpu MHz in /proc/cpuinfo (a VM may report its "
                                          "nominal clock; boost can be higher)"))
    if not candidates:
        return None, "unknown"
    clock, how = max(candidates)
    if how.startswith("cpu MHz") and "hypervisor" in facts.flags:
        # A VM that exposes neither cpufreq nor a clock in its model string reports its
        # nominal clock, and the host boosts above it: this VM (EPYC Milan) reports 2445 MHz
        # on parts that boost to 3.5 GHz (1.43x). Without the allowance the "physical" peak
        # could be beaten by a backend on a quiet host.
        return clock * VM_BOOST_ALLOWANCE, (f"cpu MHz in /proc/cpuinfo ({clock:.0f}, a VM's "
                                            f"nominal clock) x {VM_BOOST_ALLOWANCE} for the "
                                            "host's boost, which a VM does not report")
    return clock, how


def physical_peak(dtype: str = "float32", facts: CpuFacts | None = None) -> Ceiling | None:
    """The CPU's physical peak for `dtype` (float32, float64, bfloat16, float16), or None
    when its clock cannot be read at all."""
    facts = facts or read_facts()
    clock, clock_how = _clock_mhz(facts)
    if clock is None:
        return None
    units, datapath, units_how = _units(facts)
    isa_bits, isa_how = _vector_bits(facts)
    bits = min(isa_bits, datapath) if datapath else isa_bits
    width_how = isa_how + (f", {datapath}-bit datapath" if datapath and datapath < isa_bits
                           else "")
    dtype_bits = DTYPE_BITS.get(dtype, 32)
    native_half = {"bfloat16": ("avx512_bf16", "bf16"), "float16": ("avx512_fp16", "fphp")}
    lane_how = f"{bits} bits / {dtype_bits}-bit {dtype}"
    if dtype_bits == 16 and not (facts.flags & set(native_half.get(dtype, ()))
                                 or {"amx_bf16", "amx_fp16"} & facts.flags):
        dtype_bits = 32
        lane_how = f"{bits} bits / 32: no native {dtype} arithmetic flag, computed in float32"
    lanes = bits // dtype_bits
    factors = {"cores": (float(facts.cores), f"{facts.cores_how} (logical CPUs: an upper "
                                              "bound where SMT shares a core)"),
               "fma_units_per_core": (float(units), units_how),
               "lanes": (float(lanes), f"{lane_how} ({width_how})"),
               "flops_per_fma": (2.0, "an FMA is a multiply and an add"),
               "clock_ghz": (round(clock / 1000.0, 3), clock_how)}
    amx = {"bfloat16": "amx_bf16", "float16": "amx_fp16"}.get(dtype)
    if amx and amx in facts.flags:
        factors["fma_units_per_core"] = (1.0, f"{amx}: AMX tile unit")
        factors["lanes"] = (float(AMX_FMA_PER_CYCLE), "AMX: 1024 multiply-adds per cycle")
    return _product(factors)


def _product(factors: dict[str, tuple[float, str]]) -> Ceiling:
    gflops = 1.0
    for value, _how in factors.values():
        gflops *= value
    return Ceiling(gflops, factors)


def with_measured(ceiling: Ceiling, measured_gflops: float | None) -> Ceiling:
    """The ceiling, its clock raised to what a measured product implies when that is faster
    (a VM's reported clock understated the boost): a physical limit must stay above every
    measurement of the same machine."""
    if not measured_gflops or measured_gflops <= ceiling.gflops:
        return ceiling
    clock, _how = ceiling.factors["clock_ghz"]
    implied = clock * measured_gflops / ceiling.gflops
    factors = dict(ceiling.factors)
    factors["clock_ghz"] = (round(implied, 3), f"implied by the measured product "
                            f"({measured_gflops:.1f} GFLOP/s); the OS reported "
                            f"{clock:.3f} GHz, below the boost clock")
    return _product(factors)


def for_threads(machine_gflops: float | None, threads: int | None, cores: int) -> float | None:
    """The peak of the cores `threads` could use, out of a machine peak over `cores` cores:
    threads × the per-core peak, capped by the cores (more threads than cores share them).
    Unknown threads (a library default nothing reported) get the whole machine's."""
    if not machine_gflops or not threads or threads <= 0 or cores <= 0:
        return machine_gflops
    return machine_gflops * min(threads, cores) / cores
