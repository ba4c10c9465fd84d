"""What the CPU can do, read from /proc/cpuinfo: which precisions it multiplies natively."""

from __future__ import annotations

import functools

NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})
"""Flags of CPUs that compute in bf16 (elsewhere torch converts to fp32 and back: slower than fp32)."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()
