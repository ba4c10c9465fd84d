"""The layers hold by layout: the core, the cogs, the store and the config import without torch or
transformers, and the model imports without discord. Each check runs in a fresh interpreter in
which the forbidden packages cannot be imported at all, so a stray import anywhere (a module's
top level, or anything it pulls in) fails here. And no module imports itself back through others
(a view does not import its cog; shared types live in modules of their own)."""

from __future__ import annotations

import ast
import graphlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
        return None
sys.meta_path.insert(0, Blocker())
import importlib
for name in MODULES:
    importlib.import_module(name)
print(len(MODULES), "imported")
"""


def modules_of(*packages: str) -> list[str]:
    """Every module of the packages, found on disk (so a new file is covered without a change here)."""
    names = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_blocking(modules: list[str], blocked: set[str]) -> subprocess.CompletedProcess[str]:
    code = f"BLOCKED = {sorted(blocked)!r}\nMODULES = {modules!r}\n{BLOCKER}"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_core_cogs_store_and_config_import_without_torch_or_transformers() -> None:
    modules = modules_of("core", "cogs", "store")
    assert "core.config" in modules and "cogs.story" in modules and "store.sqlite" in modules
    done = import_blocking(modules, {"torch", "transformers", "tokenizers", "safetensors", "accelerate"})
    assert done.returncode == 0, done.stderr
    assert f"{len(modules)} imported" in done.stdout


def test_the_bot_side_imports_without_ray() -> None:
    """A bot that talks to a remote model service installs aiohttp, not Ray (nor torch)."""
    modules = [*modules_of("core", "cogs", "store"), "bot"]
    assert "core.remote" in modules
    done = import_blocking(modules, {"ray", "starlette", "fastapi", "uvicorn", "torch", "transformers"})
    assert done.returncode == 0, done.stderr


def test_every_model_module_imports_without_discord() -> None:
    modules = modules_of("model")
    assert {"model.service", "model.explain.importance", "model.training.train", "model.serve.app"} <= set(modules)
    if importlib.util.find_spec("ray") is None:  # `make test-fast` does not install Ray Serve
        modules = [name for name in modules if not name.startswith("model.serve")]
    done = import_blocking(modules, {"discord", "aiosqlite"})
    assert done.returncode == 0, done.stderr


def test_the_blocker_really_blocks() -> None:
    """The check above would pass vacuously if blocking did nothing."""
    done = import_blocking(["model.loading"], {"torch"})
    assert done.returncode != 0 and "torch is blocked" in done.stderr


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("core", {"model", "cogs", "store", "bot", "playground", "discord", "torch", "transformers", "ray"}),
        ("cogs", {"model", "torch", "transformers", "ray"}),
        ("store", {"model", "cogs", "bot", "torch", "transformers", "discord", "ray"}),
        ("model", {"cogs", "store", "bot", "playground", "discord"}),
    ],
)
def test_nothing_imports_back_up(package: str, forbidden: set[str]) -> None:
    """Not even lazily, inside a function: the dependency arrows point one way."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(imports_of(path) & forbidden)
        for path in (ROOT / package).rglob("*.py")
        if imports_of(path) & forbidden
    }
    assert offenders == {}


SKIPPED = {".venv", "models", "node_modules", "__pycache__", "artifacts", "data", "cache"}


def project_modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if SKIPPED & set(relative.parts) or any(part.startswith(".") for part in relative.parts):
            continue
        name = ".".join(relative.with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports; `from package import module` counts as the module alone."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    modules = project_modules()
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_the_cycle_finder_sees_a_cycle_under_type_checking(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a import thing\n")
    modules = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    assert imported("a", modules["a"], modules) == {"b"} and imported("b", modules["b"], modules) == {"a"}
