"""The compiled kernels (`build.py`), loaded once, with their C signatures; None where they cannot
run here, and the reason logged once."""

from __future__ import annotations

import ctypes
import functools
import logging
import subprocess

from model import cpu_features
from model.native import build

log = logging.getLogger(__name__)

NEEDED_FLAGS = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"})
"""What the library is compiled for (`build.FLAGS`); a CPU without one of them never loads it."""

AMX_FLAGS = frozenset({"amx_tile", "amx_int8"})

_i64, _ptr, _f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
SIGNATURES = {
    "tw_int8_gemm": [_ptr, _i64, _i64, _ptr, _i64, _ptr, _ptr, _ptr, _ptr, _i64],
    "tw_decode_attention": [_ptr, _i64, _ptr, _ptr, _i64, _i64, _i64, _i64, _i64, _i64, _ptr, _f32, _ptr, _ptr],
    "tw_topk": [_ptr, _i64, _i64, _i64, _i64, _ptr, _ptr],
    "tw_model_step": [_ptr, _i64, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _ptr],
}


@functools.cache
def load() -> ctypes.CDLL | None:
    """The library, compiled first if needed; None without the CPU features or a compiler."""
    if not NEEDED_FLAGS <= cpu_features.cpu_flags():
        log.info("Taleweaver's CPU kernels: this CPU lacks AVX-512 VNNI; torch's kernels serve")
        return None
    try:
        library = ctypes.CDLL(str(build.built_library()))
    except (OSError, subprocess.SubprocessError) as error:
        detail = (getattr(error, "stderr", b"") or b"").decode(errors="replace")[-500:]
        log.warning("Taleweaver's CPU kernels unavailable (%s %s); torch's kernels serve", error, detail)
        return None
    for name, arguments in SIGNATURES.items():
        function = getattr(library, name)
        function.restype, function.argtypes = ctypes.c_int, arguments
    library.tw_amx_enable.restype, library.tw_amx_disable.restype = ctypes.c_int, None
    if AMX_FLAGS <= cpu_features.cpu_flags() and not library.tw_amx_enable():
        log.info("Taleweaver's CPU kernels: Linux did not lend AMX's state; several rows take the VNNI tiles")
    return library


def use_amx(on: bool = True) -> bool:
    """Products of several rows through AMX (`on`, the default where the CPU has it and Linux lends
    its state) or the VNNI tiles; returns whether AMX is in use now. Both give the same numbers."""
    library = load()
    if library is None:
        return False
    if on and AMX_FLAGS <= cpu_features.cpu_flags():
        return bool(library.tw_amx_enable())
    library.tw_amx_disable()
    return False


def function(name: str) -> ctypes._CFuncPtr | None:
    """One of the library's functions (`SIGNATURES`), or None without the library."""
    library = load()
    return None if library is None else getattr(library, name)
