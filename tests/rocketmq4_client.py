"""The RocketMQ 4.x client for tests: ``rocketmq-client-python`` 2.0.0's package with the x86-64
``librocketmq.so`` from ``rocketmq-python-cvs`` 2.1.0.3's sdist beside it, both sdists fetched from PyPI with
pip into ``~/.cache/wanhook/rocketmq4`` (outside the repository). Nothing is built from source.

By hand: ``python -m tests.rocketmq4_client`` (or ``make rocketmq4``) prints the folder to set as
``WANHOOK_ROCKETMQ_CLIENT4_DIR``.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "wanhook" / "rocketmq4"
CLIENT = "rocketmq-client-python==2.0.0"
LIBRARY = "rocketmq-python-cvs==2.1.0.3"


def _sdist(requirement: str, into: Path) -> Path:
    name = requirement.replace("==", "-")
    found = sorted(into.glob(f"{name}.tar.gz"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                requirement,
                "-d",
                str(into),
            ],
            check=True,
            timeout=300,
        )
        found = sorted(into.glob(f"{name}.tar.gz"))
    return found[0]


def obtain(cache: Path = CACHE) -> Path:
    """The folder of the 4.x package (to load as ``rocketmq4``), made once."""
    folder = cache / "rocketmq4"
    if (folder / "librocketmq.so").exists():
        return folder
    if platform.machine() != "x86_64" or sys.platform != "linux":
        raise RuntimeError("the librocketmq.so in rocketmq-python-cvs 2.1.0.3 is for x86-64 Linux only")
    sdists = cache / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    work = cache / "unpacked"
    shutil.rmtree(work, ignore_errors=True)
    for requirement in (CLIENT, LIBRARY):
        with tarfile.open(_sdist(requirement, sdists)) as archive:
            archive.extractall(work, filter="data")
    staging = cache / "rocketmq4.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(work / "rocketmq-client-python-2.0.0" / "rocketmq", staging)
    shutil.copy2(work / "rocketmq-python-cvs-2.1.0.3" / "rocketmq" / "librocketmq.so", staging / "librocketmq.so")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    shutil.rmtree(work, ignore_errors=True)
    return folder


if __name__ == "__main__":
    print(obtain())
