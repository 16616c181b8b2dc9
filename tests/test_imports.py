"""The public surface imports cleanly, in any order, from a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pipeline
import stages

MODULES = [
    "pipeline",
    "stages",
    "stages.messages",
    "stages.evaluation",
    "pipeline.runner._run",
    "pipeline.llm._gateway",
    "pipeline.sim.server",
    "pipeline.cli",
]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("package", [pipeline, stages])
def test_every_exported_name_resolves(package: object) -> None:
    names: list[str] = package.__all__  # type: ignore[attr-defined]
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    for name in names:
        assert getattr(package, name) is not None


def test_loading_a_config_imports_no_http_library() -> None:
    code = (
        "import sys\n"
        "from pipeline.config._load import load_config\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["stages", "pipeline"])
def test_importing_does_not_load_aiohttp(module: str) -> None:
    """Only opening an HTTP transport loads aiohttp: the stages and the library's surface
    import without it."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('aiohttp')))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
