"""pytest.ini hides the deprecation warnings Ray Serve's own models raise, and only those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import warnings

from pydantic.warnings import PydanticDeprecatedSince20


def test_ray_serve_config():
    import ray.serve._private.config  # noqa: F401  (its pydantic models warn as they are defined)


def test_our_own_deprecation_still_shows():
    warnings.warn(PydanticDeprecatedSince20("our own"))
"""


def test_ray_serves_pydantic_warnings_are_filtered_and_no_others(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pytest.ini"), str(probe)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "2 passed, 1 warning" in done.stdout, done.stdout
    assert "our own" in done.stdout and "ray/serve/_private/config.py" not in done.stdout
