"""Compiles Taleweaver's C kernels (`SOURCES`) into one shared library, once per source version (no
torch needed here, so a Docker build stage can run it: `python -m model.native.build`).

The library is named after a hash of the source and the compiler flags and written atomically
(compiled into a scratch file, then renamed), so processes that start together agree on it and a
changed source is compiled afresh.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = tuple(
    Path(__file__).with_name(name) for name in ("int8_gemm.c", "decode_attention.c", "block_step.c", "topk.c")
)
HEADERS = (Path(__file__).with_name("vector_math.h"),)
"""Included by the sources: part of what names the library."""
FLAGS = ("-O3", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-ffp-contract=off")
"""AVX-512 VNNI is asked for explicitly (not -march=native), so a library built on one machine runs
on any CPU that has these features; no FMA contraction, so a plain-torch reference matches it."""


def build_dir() -> Path:
    """Where libraries go: $TALEWEAVER_NATIVE_DIR, else ~/.cache/taleweaver/native."""
    return Path(os.environ.get("TALEWEAVER_NATIVE_DIR") or Path.home() / ".cache" / "taleweaver" / "native")


def library_path() -> Path:
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS)) + " ".join(FLAGS).encode())
    return build_dir() / f"taleweaver-kernels-{digest.hexdigest()[:16]}.so"


def built_library() -> Path:
    """The library's path, compiled first if it is not there (OSError or CalledProcessError if it
    cannot be: no compiler, or one that rejects the flags)."""
    target = library_path()
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, *FLAGS, "-fPIC", "-shared", "-o", str(built), *map(str, SOURCES), "-lm"]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        os.replace(built, target)
    return target


if __name__ == "__main__":
    print(built_library())
    sys.exit(0)
