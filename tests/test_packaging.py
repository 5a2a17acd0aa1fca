"""What ``pip install wanhook`` puts into a user's environment: one top-level name, ``wanhook``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .support import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of what the build reads, so the build's own folder (build/) is not left in the checkout.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("service", "consumers", "emulator"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # The build backend of the running environment: no download, the same setuptools `make` installs with.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [built] = out.glob("wanhook-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_claims_no_generic_top_level_package(wheel: zipfile.ZipFile) -> None:
    roots = {Path(name).parts[0] for name in wheel.namelist()}
    assert {root for root in roots if not root.endswith(".dist-info")} == {"wanhook"}
    # `wanhook` is a namespace: no __init__ of its own, so nothing of the service loads with the emulator.
    assert "wanhook/__init__.py" not in wheel.namelist()
    for package in ("service", "service/web", "service/ingress", "service/cli", "consumers", "emulator"):
        assert f"wanhook/{package}/__init__.py" in wheel.namelist(), package


def test_the_wheel_carries_the_dashboard_and_every_module_of_the_checkout(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "wanhook/service/web/static/index.html" in names
    assert any(name.startswith("wanhook/service/web/static/assets/") for name in names)
    for folder in ("service", "consumers", "emulator"):
        for path in (ROOT / folder).rglob("*.py"):
            assert f"wanhook/{path.relative_to(ROOT).as_posix()}" in names, path


def test_the_console_script_and_python_dash_m_start_the_same_command_line(tmp_path: Path) -> None:
    # Run from a folder that holds nothing of the checkout, so only the installed names can resolve.
    for command in (
        [sys.executable, "-m", "wanhook.service", "--version"],
        [sys.executable, "-m", "wanhook.service.cli", "--version"],
        [str(Path(sys.executable).parent / "wanhook"), "--version"],
    ):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith("wanhook "), (command, result.stdout)
