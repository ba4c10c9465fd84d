"""What the CPU can do, read from /proc/cpuinfo: which precisions it multiplies natively."""

from __future__ import annotations

import functools

import torch

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


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX-512-BF16 or AMX) that oneDNN uses."""
    cpu = getattr(torch._C, "_cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:
        pass  # torch 2.13 dropped these; the kernel's CPU flags say the same on Linux
    return bool(cpu_flags() & NATIVE_BF16)
