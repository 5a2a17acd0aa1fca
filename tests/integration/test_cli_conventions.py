"""Conventions of the ``wanhook`` command line: ``--version``, and help text for every option."""

from __future__ import annotations

import argparse
import os
import subprocess
from importlib.metadata import version

from wanhook.service.cli.main import parser

from ..support import ROOT, wanhook
from .test_docs import REFERENCE

commands = REFERENCE.commands


def test_version_is_the_installed_package() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))}
    result = subprocess.run(
        wanhook("--version"), cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wanhook {version('wanhook')}"


def test_every_option_has_help() -> None:
    missing = [
        f"{' '.join(('wanhook', *path))} {action.option_strings or action.dest}"
        for path, command in commands(parser())
        for action in command._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert not missing, f"options without help text: {missing}"
