"""wanhook's model table against the emulator's statement of DashScope's rules, and the emulator's independence.

The emulator's rules (``emulator/rules.py``) are written from Alibaba Cloud's documentation; wanhook's
(``service/models.py`` and ``service/validation.py``) decide what it accepts before anything is sent.
Every difference between the two is either a mistake (fixed in whichever is wrong) or a choice, and
each choice is listed in ``DELIBERATE`` with its reason. A difference not listed fails the test, and so
does a listed one that has gone away.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

from wanhook.emulator import rules
from wanhook.emulator.tasks import ApiError as EmulatorError
from wanhook.emulator.tasks import _parameters as emulator_checks
from wanhook.service import models
from wanhook.service.errors import InvalidRequest as ServiceError
from wanhook.service.validation import check_task

ROOT = Path(__file__).resolve().parent.parent

# (model or "*", what) -> why wanhook differs from DashScope there on purpose.
DELIBERATE: dict[tuple[str, str], str] = {
    ("*", "over-long prompt"): (
        "DashScope cuts a prompt past the model's limit and says nothing; wanhook refuses it with 422 so that "
        "the video is never made from a prompt its sender did not write (README, HTTP API)."
    ),
    ("*", "over-long negative_prompt"): "the same, for the 500 characters of negative_prompt.",
    ("wan2.6-t2v", "shot_type multi without prompt_extend"): (
        "DashScope makes one shot when prompt_extend is false, whatever shot_type says; wanhook refuses the "
        "combination rather than bill a video that is not what was asked."
    ),
    ("*", "audio_url over 2048 characters"): (
        "wanhook bounds what it stores; DashScope documents no length for the URL."
    ),
}

ALL_MODELS = sorted(set(models.MODELS) | set(rules.MODELS))


def _service_accepts(body: dict[str, Any]) -> bool:
    try:
        check_task(body)
    except ServiceError:
        return False
    return True


def _emulator_accepts(model: str, given: dict[str, Any], parameters: dict[str, Any]) -> bool:
    try:
        emulator_checks({"input": {"prompt": "p", **given}, "parameters": parameters}, rules.MODELS[model])
    except EmulatorError:
        return False
    return True


def _emulator_keeps(model: str, given: dict[str, Any]) -> dict[str, Any]:
    return emulator_checks({"input": given, "parameters": {}}, rules.MODELS[model])


def differences() -> dict[tuple[str, str], str]:
    """Every way the two tables disagree, each with both sides' values."""
    found: dict[tuple[str, str], str] = {}

    def compare(model: str, what: str, service: Any, emulator: Any) -> None:
        if service != emulator:
            found[(model, what)] = f"wanhook {service!r}, emulator {emulator!r}"

    compare("*", "tiers", models.TIERS, rules.TIERS)
    compare("*", "seed maximum", models.SEED_MAX, rules.SEED_MAX)
    compare("*", "negative_prompt limit", models.NEGATIVE_PROMPT_MAX, rules.NEGATIVE_PROMPT_MAX)
    compare("*", "shot types", models.SHOT_TYPES, rules.SHOT_TYPES)
    for name in ALL_MODELS:
        ours, theirs = models.MODELS.get(name), rules.MODELS.get(name)
        if ours is None or theirs is None:
            found[(name, "model")] = f"known to {'the emulator' if ours is None else 'wanhook'} only"
            continue
        for field in (
            "default_size",
            "tiers",
            "durations",
            "default_duration",
            "prompt_max",
            "submit_rps",
            "max_running",
            "audio",
            "shot_type",
        ):
            compare(name, field, getattr(ours, field), getattr(theirs, field))

        # The parameters each model takes, by what each side does with a request that sends them.
        for field, value in (
            ("audio_url", "https://example.com/a.mp3"),
            ("audio", False),
            ("shot_type", "multi"),
            ("resolution", "720P"),
        ):
            into = "input" if field == "audio_url" else "parameters"
            compare(
                name,
                f"takes {field}",
                _service_accepts({"prompt": "p", "model": name, field: value}),
                _emulator_accepts(
                    name, {field: value} if into == "input" else {}, {field: value} if into == "parameters" else {}
                ),
            )
        if theirs.shot_type:
            compare(
                name,
                "shot_type multi without prompt_extend",
                _service_accepts({"prompt": "p", "model": name, "shot_type": "multi", "prompt_extend": False}),
                _emulator_accepts(name, {}, {"shot_type": "multi", "prompt_extend": False}),
            )
        if theirs.audio:
            long_url = "https://example.com/" + "a" * 2100
            compare(
                "*",
                "audio_url over 2048 characters",
                _service_accepts({"prompt": "p", "model": name, "audio_url": long_url}),
                _emulator_accepts(name, {"audio_url": long_url}, {}),
            )

        # Over-long text: wanhook refuses it (422), DashScope cuts it.
        long_prompt = "p" * (theirs.prompt_max + 1)
        compare(
            "*",
            "over-long prompt",
            "accepted" if _service_accepts({"prompt": long_prompt, "model": name}) else "refused",
            "cut" if len(_emulator_keeps(name, {"prompt": long_prompt})["prompt"]) == theirs.prompt_max else "not cut",
        )
        long_negative = "n" * (rules.NEGATIVE_PROMPT_MAX + 1)
        compare(
            "*",
            "over-long negative_prompt",
            "accepted"
            if _service_accepts({"prompt": "p", "model": name, "negative_prompt": long_negative})
            else "refused",
            "cut"
            if len(_emulator_keeps(name, {"prompt": "p", "negative_prompt": long_negative})["negative_prompt"])
            == rules.NEGATIVE_PROMPT_MAX
            else "not cut",
        )
    return found


def test_every_difference_is_deliberate() -> None:
    found = differences()
    unexplained = {key: value for key, value in found.items() if key not in DELIBERATE}
    assert not unexplained, "wanhook and the documented rules differ: " + "; ".join(
        f"{model} {what}: {value}" for (model, what), value in sorted(unexplained.items())
    )
    gone = sorted(set(DELIBERATE) - set(found))
    assert not gone, f"listed as deliberate but no longer different: {gone}"


def test_every_model_fact_names_its_source() -> None:
    assert all(model.source for model in rules.MODELS.values())
    assert "https://www.alibabacloud.com/help/" in (rules.__doc__ or "")
    assert set(rules.ERROR_STATUS) >= set(rules.MESSAGES)


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {".".join(alias.name.split(".")[:2]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(".".join(node.module.split(".")[:2]))
    return roots


def test_emulator_imports_nothing_of_wanhook() -> None:
    """The stand-in must not agree with wanhook by construction: no import of service/ or consumers/,
    written or pulled in by another import."""
    sources = sorted((ROOT / "emulator").rglob("*.py"))
    assert sources
    for path in sources:
        assert not {root for root in _imported_roots(path) if root in ("wanhook.service", "wanhook.consumers")}, path
    modules = [f"wanhook.emulator.{path.stem}" for path in sources if path.stem not in ("__main__",)]
    check = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in modules)
        + "bad = sorted(m for m in sys.modules if m.startswith(('wanhook.service', 'wanhook.consumers')))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
