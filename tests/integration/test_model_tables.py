"""wanhook's model table against the emulator's statement of DashScope's rules, and the emulator's independence.

The emulator's rules (``emulator/rules.py``) are written from Alibaba Cloud's documentation; wanhook's
(``service/domain/models.py`` and ``service/domain/validation.py``) decide what it accepts before anything is sent.
Every difference between the two is either a mistake (fixed in whichever is wrong) or a choice, and
each choice is listed in ``DELIBERATE`` with its reason. A difference not listed fails the test, and so
does a listed one that has gone away.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

from wanhook.emulator import rules
from wanhook.emulator.tasks import ApiError as EmulatorError
from wanhook.emulator.tasks import _parameters as emulator_checks
from wanhook.emulator.tasks import check_picture as emulator_picture
from wanhook.service.core.errors import InvalidRequest as ServiceError
from wanhook.service.domain import models
from wanhook.service.domain.validation import check_image_bytes, check_task

ROOT = Path(__file__).resolve().parents[2]

# (model or "*", what) -> why wanhook differs from DashScope there on purpose.
DELIBERATE: dict[tuple[str, str], str] = {
    ("*", "over-long prompt"): (
        "DashScope cuts a prompt past the model's limit and says nothing; wanhook refuses it with 422 so that "
        "the video is never made from a prompt its sender did not write (docs/reference/http-api.md)."
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

ALL_MODELS = sorted(set(models.MODELS) | set(rules.MODELS) | set(rules.IMAGE_MODELS))


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
    compare("*", "kinds", set(models.KINDS), set(rules.PATHS))
    compare("*", "create paths", {kind: path.split("/")[-2] for kind, path in models.ENDPOINTS.items()}, rules.PATHS)
    compare("*", "resolution tiers", set(models.RESOLUTIONS), set(rules.RESOLUTION_PIXELS))
    compare("*", "image formats", models.IMAGE_FORMATS, rules.IMAGE_FORMATS)
    compare("*", "image sides", (models.IMAGE_MIN_SIDE, models.IMAGE_MAX_SIDE), rules.IMAGE_SIDES)
    compare("*", "image bytes", models.IMAGE_MAX_BYTES, rules.IMAGE_BYTES_MAX)
    compare("*", "temporary file life", models.TEMPORARY_STORAGE_HOURS * 3600, rules.UPLOAD_TTL_SECONDS)
    compare("*", "oss resolve header", models.OSS_RESOLVE_HEADER.lower(), rules.OSS_RESOLVE_HEADER)
    for name, image in SAMPLE_IMAGES.items():
        compare("*", f"image {name}", _service_takes_image(image), _emulator_takes_image(image))
    for name in ALL_MODELS:
        if name in rules.IMAGE_MODELS or (name in models.MODELS and models.MODELS[name].kind != models.T2V):
            _compare_image_model(name, compare, found)
            continue
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


def _image(width: int, height: int, format: str = "JPEG", mode: str = "RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), (120, 60, 30, 255)[: len(mode)]).save(buffer, format)
    return buffer.getvalue()


SAMPLE_IMAGES: dict[str, bytes] = {
    "jpeg 640x480": _image(640, 480),
    "png 360x2000": _image(360, 2000, "PNG"),
    "webp 800x800": _image(800, 800, "WEBP"),
    "bmp 400x400": _image(400, 400, "BMP"),
    "gif 400x400": _image(400, 400, "GIF"),
    "jpeg 359x400": _image(359, 400),
    "jpeg 2001x400": _image(2001, 400),
    "png with alpha": _image(400, 400, "PNG", "RGBA"),
    "not an image": b"plain text, not a picture",
}


def _service_takes_image(data: bytes) -> bool:
    try:
        check_image_bytes("img_url", data)
    except ServiceError:
        return False
    return True


def _emulator_takes_image(data: bytes) -> bool:
    try:
        emulator_picture("img_url", data)
    except EmulatorError:
        return False
    return True


def _compare_image_model(name: str, compare: Any, found: dict[tuple[str, str], str]) -> None:
    """An image-to-video or first-and-last-frame model, by its table and by what each side accepts."""
    ours, theirs = models.MODELS.get(name), rules.IMAGE_MODELS.get(name)
    if ours is None or theirs is None:
        found[(name, "model")] = f"known to {'the emulator' if ours is None else 'wanhook'} only"
        return
    for field in (
        "kind",
        "tiers",
        "default_resolution",
        "durations",
        "default_duration",
        "prompt_max",
        "submit_rps",
        "max_running",
        "audio",
        "image_fields",
    ):
        compare(name, field, getattr(ours, field), getattr(theirs, field))
    url = "https://example.com/a.jpg"
    images = {field: url for field in theirs.image_fields}

    def service(**extra: Any) -> bool:
        return _service_accepts({"model": name, **images, **extra})

    def emulator(given: dict[str, Any], parameters: dict[str, Any]) -> bool:
        try:
            emulator_checks({"input": {**images, **given}, "parameters": parameters}, theirs)
        except EmulatorError:
            return False
        return True

    compare(name, "prompt optional", service(), emulator({}, {}))
    for tier in models.RESOLUTIONS:
        compare(name, f"resolution {tier}", service(resolution=tier), emulator({}, {"resolution": tier}))
    for seconds in range(1, 16):
        compare(name, f"duration {seconds}", service(duration=seconds), emulator({}, {"duration": seconds}))
    compare(name, "takes size", service(size="1280*720"), emulator({}, {"size": "1280*720"}))
    compare(name, "takes audio", service(audio=False), emulator({}, {"audio": False}))
    compare(
        name,
        "takes audio_url",
        service(audio_url="https://example.com/a.mp3"),
        emulator({"audio_url": "https://example.com/a.mp3"}, {}),
    )
    compare(name, "takes shot_type", service(shot_type="single"), emulator({}, {"shot_type": "single"}))
    for field in theirs.image_fields:
        without = {k: v for k, v in images.items() if k != field}
        compare(
            name,
            f"needs {field}",
            _service_accepts({"model": name, **without}),
            _emulator_accepts_input(theirs, without),
        )
    for value in ("ftp://example.com/a.jpg", "oss://dashscope-instant/x/a.jpg", "data:image/png;base64,@@"):
        field = theirs.image_fields[0]
        compare(name, f"{field} {value[:12]}", service(**{field: value}), emulator({field: value}, {}))


def _emulator_accepts_input(spec: Any, given: dict[str, Any]) -> bool:
    try:
        emulator_checks({"input": given, "parameters": {}}, spec)
    except EmulatorError:
        return False
    return True


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
    assert all(model.source for model in rules.IMAGE_MODELS.values())
    # Each kind's page is named, in the emulator's statement and, independently, in wanhook's table.
    for page in (
        "text-to-video-api-reference",
        "legacy-wan-text-to-video-api-reference",
        "text-to-video-guide",
        "rate-limit",
        "legacy-image-to-video-api-reference",
        "image-to-video-by-first-and-last-frame-api-reference",
        "get-temporary-file-url",
    ):
        assert page in (rules.__doc__ or ""), page
        assert page in (ROOT / "service" / "domain" / "models.py").read_text(), page
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
