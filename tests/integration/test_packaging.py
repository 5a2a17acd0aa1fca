"""What ``pip install wanhook`` puts into a user's environment: one top-level name, ``wanhook``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from ..support import ROOT


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


def test_the_wheel_carries_every_lua_script(wheel: zipfile.ZipFile) -> None:
    """The scripts are data files, read when scripts.py is imported: one left out of the wheel stops the service."""
    names = set(wheel.namelist())
    scripts = sorted((ROOT / "service" / "persistence" / "lua").glob("*.lua"))
    assert len(scripts) > 20
    for path in scripts:
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


def test_pip_install_into_a_fresh_venv_adds_no_generic_top_level_name(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """The issue's own check: what `pip install` puts into a new environment's site-packages, and that the
    console script and `python -m` run from there (not from this checkout)."""
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    )
    before = set(os.listdir(site_packages))
    # pip of the running environment installs into the new one: no index, no download, only the wheel.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index"]
        + [wheel.filename or ""],
        check=True,
        capture_output=True,
        timeout=300,
    )
    added = set(os.listdir(site_packages)) - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"wanhook"}, sorted(added)
    assert not {"service", "consumers", "emulator"} & set(os.listdir(site_packages))
    assert sorted(os.listdir(site_packages / "wanhook")) == ["consumers", "emulator", "service"]
    # The dependencies come from the running environment, appended after the new site-packages. A path a .pth
    # names has no .pth files of its own read, so the editable install's hook (which maps wanhook.* onto this
    # checkout) stays out, and so does this checkout.
    (site_packages / "dependencies.pth").write_text(
        next(path for path in sys.path if path.endswith("site-packages")) + "\n"
    )
    where = subprocess.run(
        [python, "-c", "import wanhook.service as s, wanhook.consumers as c; print(s.__file__); print(c.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(site_packages / "wanhook") for line in where.stdout.split()), where.stdout
    # The installed package finds its Lua scripts in its own folder (they are read on import).
    loaded = subprocess.run(
        [
            python,
            "-c",
            "from wanhook.service.persistence import scripts; print(scripts.LUA); print(len(scripts.INGEST))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert Path(loaded.stdout.split()[0]).is_relative_to(site_packages / "wanhook"), loaded.stdout
    for generic in ("service", "consumers", "emulator"):
        result = subprocess.run([python, "-c", f"import {generic}"], cwd=tmp_path, capture_output=True, timeout=60)
        assert result.returncode != 0, f"`import {generic}` resolves in the new environment"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for command in (
        [str(env / "bin" / "wanhook"), "--version"],
        [str(python), "-m", "wanhook.service", "--version"],
        [str(python), "-m", "wanhook.service.cli", "--version"],
    ):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.strip() == f"wanhook {version}", (command, result.stdout)
    helped = subprocess.run(
        [python, "-m", "wanhook.service", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "serve" in helped.stdout and "consume" in helped.stdout, helped
