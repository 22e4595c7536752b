"""The CPU's family, model, stepping and microarchitecture name, for the fingerprint and labels.

A model string says little: a VM names a Zen 3 and a Zen 5 alike "AMD EPYC". The name comes
from archspec (the detector Spack maintains), which matches the CPU's feature flags against
its table of microarchitectures. A hypervisor often hides a few flags (on the 2-vCPU Zen 5 VM:
flush_l1d, movdir64b, movdiri, pku, rdseed), and archspec then falls back to a generic level
(`x86_64_v4`). Then the vendor's family and model decide, through the table qkbench already
keeps for FMA units (`qkbench.machine.cpu_peak.MICROARCHITECTURES`), provided archspec agrees
that the named core is a refinement of the level it detected; `how_found` says which way it
went and what archspec missed.
"""

from __future__ import annotations

from typing import Any

from qkbench.machine.cpu_peak import CpuFacts, read_facts, table_row


def describe(facts: CpuFacts | None = None) -> dict[str, Any]:
    """{"vendor", "family", "model_number", "stepping", "microarchitecture", "how_found"}."""
    facts = facts or read_facts()
    found = {"vendor": facts.vendor or None, "family": facts.family,
             "model_number": facts.model, "stepping": facts.stepping}
    name, how = microarchitecture(facts)
    return {**found, "microarchitecture": name, "microarchitecture_how": how}


def microarchitecture(facts: CpuFacts) -> tuple[str | None, str]:
    """(archspec's name for this CPU, how it was found)."""
    try:
        import archspec.cpu
    except ImportError:
        return _from_table(facts, None, "archspec is not installed")
    try:
        host = archspec.cpu.host()
    except Exception as error:  # a detector failure must never fail a fingerprint
        return _from_table(facts, None, f"archspec failed: {error}")
    if host.vendor != "generic":
        return host.name, "archspec (the CPU's feature flags)"
    return _from_table(facts, host, f"archspec matches only the generic {host.name}")


def _from_table(facts: CpuFacts, host: Any, why: str) -> tuple[str | None, str]:
    row = table_row(facts)
    name = row[7] if row is not None else ""
    if not name or facts.family is None or facts.model is None:
        return (host.name if host is not None else None), why
    where = f"family {facts.family:#x} model {facts.model:#x} ({row[6]})"
    if host is None:
        return name, f"{where}; {why}"
    import archspec.cpu

    target = archspec.cpu.TARGETS.get(name)
    if target is None or not (target == host or host in target.ancestors):
        # The vendor's table and the flags disagree: trust the flags' generic level.
        return host.name, f"{why}; {where} names {name}, which its flags do not support"
    missing = sorted(set(target.features) - set(host.features) - _flags_of(facts))
    hidden = f" (the machine hides {', '.join(missing)})" if missing else ""
    return name, f"{where}; {why}{hidden}"


def _flags_of(facts: CpuFacts) -> set[str]:
    # /proc/cpuinfo calls SSE3 "pni"; archspec's table says sse3.
    return set(facts.flags) | ({"sse3"} if "pni" in facts.flags else set())
