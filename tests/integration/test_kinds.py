"""Image-to-video and first-and-last-frame tasks, through real processes.

The official ``dashscope`` SDK against the emulator (its image-to-video call with a local file, which it
puts in the temporary storage, and its first-and-last-frame call); wanhook end to end for each kind
(webhook events, videos stored, their first and last frames compared with the images given); bad images
refused with a 4xx and nothing stored; and ``wanhook submit --image cat.jpg "the cat turns its head"``.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import dashscope
import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from ..conftest import Stack
from ..support import ROOT, Emulator, Process

# How far a decoded frame may be from its image, on average per channel (0-255): H.264 at high quality and
# yuv420p's halved chroma move a picture by a few levels; another picture is tens of levels away.
FRAME_TOLERANCE = 8.0


def picture(width: int, height: int, hue: int) -> Image.Image:
    """A picture with structure (gradient, shapes), so that a wrong or shifted frame does not pass."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([(x + hue) % 256 + 0 * y, (y + 2 * hue) % 256 + 0 * x, (255 - x / 2 - y / 2 + hue) % 256], axis=2)
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 5, width // 2, height // 2), fill=(250, 240, 20))
    draw.rectangle((width * 3 // 5, height * 3 // 5, width * 9 // 10, height * 9 // 10), fill=(20, 20, 200))
    return image


def encoded(image: Image.Image, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, quality=95) if format == "JPEG" else image.save(buffer, format)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def frames(path: Path | bytes) -> tuple[np.ndarray, np.ndarray, int]:
    """The first and last frames (RGB) and the frame count of an MP4."""
    source = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    with av.open(source) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return decoded[0], decoded[-1], len(decoded)


def difference(frame: np.ndarray, image: bytes) -> float:
    """Mean absolute difference between a frame and the image scaled and centre-cropped to its size."""
    height, width = frame.shape[:2]
    with Image.open(io.BytesIO(image)) as opened:
        rgb = opened.convert("RGB")
    scale = max(width / rgb.width, height / rgb.height)
    scaled = rgb.resize(
        (max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale))), Image.Resampling.LANCZOS
    )
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    expected = np.asarray(scaled.crop((left, top, left + width, top + height)), dtype=np.float32)
    return float(np.abs(frame.astype(np.float32) - expected).mean())


@pytest.fixture
def cat(tmp_path: Path) -> Path:
    path = tmp_path / "cat.jpg"
    path.write_bytes(encoded(picture(640, 480, 0)))
    return path


@pytest.fixture
def dog(tmp_path: Path) -> Path:
    path = tmp_path / "dog.png"
    path.write_bytes(encoded(picture(480, 640, 90), "PNG"))
    return path


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    """A local web server for image URLs (DashScope downloads what it is given)."""
    directory = tmp_path / "www"
    directory.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def emulator(tmp_path: Path, processes: list[Process]) -> Emulator:
    process = Emulator(tmp_path, "--render-seconds", "0.2")
    processes.append(process.start())
    return process


# --- the official SDK against the emulator ------------------------------------------------------------


def test_sdk_image_to_video_with_a_local_file(emulator: Emulator, cat: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK puts a file:// image in the temporary storage (getPolicy, form upload) and creates the task
    with its oss:// URL and the resolve header; the video opens on the image."""
    monkeypatch.setattr(dashscope, "base_http_api_url", emulator.api)
    result = dashscope.VideoSynthesis.call(
        model="wan2.2-i2v-flash",
        prompt="the cat turns its head",
        img_url=f"file://{cat}",
        resolution="480P",
        api_key="sk-x",
    )
    assert result.status_code == 200, result
    assert result.output.task_status == "SUCCEEDED", result
    first, _, count = frames(httpx.get(result.output.video_url).content)
    assert count == 5 * 30
    assert first.shape[0] * first.shape[1] == pytest.approx(832 * 480, rel=0.01)  # the tier's pixels
    assert first.shape[1] / first.shape[0] == pytest.approx(640 / 480, rel=0.01)  # the image's shape
    assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE


def test_sdk_first_and_last_frame(
    emulator: Emulator, cat: Path, dog: Path, image_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kf2v goes to the image2video path with first_frame_url and last_frame_url (here public URLs the
    emulator downloads); the video starts on the first image and ends on the last."""
    for path in (cat, dog):
        (tmp_path / "www" / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(dashscope, "base_http_api_url", emulator.api)
    task = dashscope.VideoSynthesis.async_call(
        model="wan2.1-kf2v-plus",
        prompt="the cat becomes a dog",
        first_frame_url=f"{image_server}/cat.jpg",
        last_frame_url=f"{image_server}/dog.png",
        api_key="sk-x",
    )
    assert task.status_code == 200, task
    result = dashscope.VideoSynthesis.wait(task, api_key="sk-x")
    assert result.output.task_status == "SUCCEEDED", result
    first, last, _ = frames(httpx.get(result.output.video_url).content)
    assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE
    assert difference(last, dog.read_bytes()) < FRAME_TOLERANCE
    assert difference(first, dog.read_bytes()) > 3 * FRAME_TOLERANCE  # the comparison tells images apart


def _create(
    emulator: Emulator, body: dict[str, Any], path: str = "video-generation", headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{emulator.api}/services/aigc/{path}/video-synthesis",
        json=body,
        timeout=30,
        headers={"Authorization": "Bearer sk-x", "X-DashScope-Async": "enable", **(headers or {})},
    )


@pytest.mark.parametrize(
    ("body", "path", "wanted"),
    [
        # an image DashScope does not take: not an image, sides out of [360, 2000], a PNG with alpha
        (
            {"model": "wan2.2-i2v-flash", "input": {"img_url": data_url(b"not an image")}},
            "video-generation",
            "not an image",
        ),
        (
            {"model": "wan2.2-i2v-flash", "input": {"img_url": data_url(encoded(picture(300, 300, 0)))}},
            "video-generation",
            "[360, 2000]",
        ),
        (
            {"model": "wan2.2-i2v-flash", "input": {"img_url": data_url(encoded(picture(2100, 600, 0)))}},
            "video-generation",
            "[360, 2000]",
        ),
        (
            {
                "model": "wan2.2-i2v-flash",
                "input": {"img_url": data_url(encoded(picture(400, 400, 0).convert("RGBA"), "PNG"), "image/png")},
            },
            "video-generation",
            "alpha",
        ),
        # no image; an image kind's parameter the model lacks; size instead of resolution
        ({"model": "wan2.2-i2v-flash", "input": {"prompt": "p"}}, "video-generation", "input.img_url"),
        (
            {
                "model": "wan2.2-i2v-plus",
                "input": {"img_url": data_url(encoded(picture(400, 400, 0)))},
                "parameters": {"resolution": "720P"},
            },
            "video-generation",
            "resolution",
        ),
        (
            {
                "model": "wan2.2-i2v-flash",
                "input": {"img_url": data_url(encoded(picture(400, 400, 0)))},
                "parameters": {"size": "832*480"},
            },
            "video-generation",
            "parameters.size",
        ),
        # a first-and-last-frame model on the text-to-video path (what an old SDK does), and without its last frame
        (
            {
                "model": "wan2.1-kf2v-plus",
                "input": {
                    "first_frame_url": "https://example.com/a.jpg",
                    "last_frame_url": "https://example.com/b.jpg",
                },
            },
            "video-generation",
            "url error",
        ),
        (
            {"model": "wan2.1-kf2v-plus", "input": {"first_frame_url": data_url(encoded(picture(400, 400, 0)))}},
            "image2video",
            "input.last_frame_url",
        ),
    ],
)
def test_emulator_refuses_what_dashscope_refuses(
    emulator: Emulator, body: dict[str, Any], path: str, wanted: str
) -> None:
    response = _create(emulator, body, path)
    assert response.status_code == 400, response.text
    assert response.json()["code"].startswith("InvalidParameter") and wanted in response.json()["message"]
    assert httpx.get(emulator.url + "/_emulator/tasks").json() == {"tasks": []}


def test_emulator_image_urls_and_temporary_files(emulator: Emulator, image_server: str, cat: Path) -> None:
    """An unreachable image URL is refused at create; an oss:// file needs the resolve header and its model."""
    response = _create(emulator, {"model": "wan2.2-i2v-flash", "input": {"img_url": f"{image_server}/missing.jpg"}})
    assert response.status_code == 400 and response.json()["code"] == "InvalidParameter.DataInspection"
    auth = {"Authorization": "Bearer sk-x"}
    policy = httpx.get(
        f"{emulator.api}/uploads", params={"action": "getPolicy", "model": "wan2.2-i2v-flash"}, headers=auth
    ).json()["data"]
    key = f"{policy['upload_dir']}/cat.jpg"
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": key,
        "success_action_status": "200",
    }
    uploaded = httpx.post(policy["upload_host"], data=form, files={"file": ("cat.jpg", cat.read_bytes())})
    assert uploaded.status_code == 200
    body = {"model": "wan2.2-i2v-flash", "input": {"img_url": f"oss://{key}"}, "parameters": {"resolution": "480P"}}
    without = _create(emulator, body)
    assert without.status_code == 400 and "X-DashScope-OssResourceResolve" in without.json()["message"]
    resolve = {"X-DashScope-OssResourceResolve": "enable"}
    other_model = _create(emulator, {**body, "model": "wan2.2-i2v-plus"}, headers=resolve)
    assert other_model.status_code == 400, other_model.text  # a file is bound to the model it was uploaded for
    created = _create(emulator, body, headers=resolve)
    assert created.status_code == 200, created.text


# --- wanhook end to end ------------------------------------------------------------------------------


def _stored(stack: Stack, task_id: str) -> Path:
    task = stack.wait_status(task_id, "ready", timeout=90)
    return Path(task["video"]["path"])


def test_image_to_video_end_to_end(stack: Stack, cat: Path) -> None:
    """kind i2v with a base64 image: validated, sent, its event received by webhook, its video stored."""
    task = stack.create(
        "the cat turns its head",
        kind="image-to-video",
        img_url=data_url(cat.read_bytes()),
        resolution="480P",
        size=None,
    )
    assert task["model"] == "wan2.2-i2v-flash"
    first, _, _ = frames(_stored(stack, task["id"]))
    assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE
    [sent] = httpx.get(stack.emulator.url + "/_emulator/tasks").json()["tasks"]
    assert sent["model"] == "wan2.2-i2v-flash" and sent["kind"] == "i2v" and sent["resolution"] == "480P"


def test_first_and_last_frame_end_to_end(stack: Stack, cat: Path, dog: Path) -> None:
    task = stack.create(
        "",
        kind="first-and-last-frame",
        first_frame_url=data_url(cat.read_bytes()),
        last_frame_url=data_url(dog.read_bytes(), "image/png"),
        resolution="480P",
        size=None,
    )
    assert task["model"] == "wan2.2-kf2v-flash"
    first, last, _ = frames(_stored(stack, task["id"]))
    assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE
    assert difference(last, dog.read_bytes()) < FRAME_TOLERANCE


def test_large_image_goes_through_temporary_storage(stack: Stack, tmp_path: Path) -> None:
    """An image over the inline limit is put in DashScope's temporary storage; the task keeps its oss:// URL."""
    noise = np.random.default_rng(7).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    big = encoded(Image.fromarray(noise), "PNG")
    assert len(big) > 1024 * 1024
    task = stack.create("static", kind="i2v", img_url=data_url(big, "image/png"), resolution="480P", size=None)
    assert task["parameters"]["img_url"].startswith("oss://")
    first, _, _ = frames(_stored(stack, task["id"]))
    assert first.shape[1] / first.shape[0] == pytest.approx(1600 / 1200, rel=0.01)


def test_a_large_image_is_uploaded_only_once_a_create_is_admitted(stack: Stack, tmp_path: Path) -> None:
    """Validation, the Idempotency-Key and admission come before the upload: a faithful retry answers the first
    task without a second upload, and a create the queue refuses costs DashScope nothing."""
    noise = np.random.default_rng(8).integers(0, 256, (1100, 1500, 3), dtype=np.uint8)
    big = data_url(encoded(Image.fromarray(noise), "PNG"), "image/png")
    body = {"prompt": "static", "kind": "i2v", "img_url": big, "resolution": "480P"}
    before = stack.emulator.stats()
    first = stack.http.post("/v1/tasks", json=body, headers={"Idempotency-Key": "large-1"})
    again = stack.http.post("/v1/tasks", json=body, headers={"Idempotency-Key": "large-1"})
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert stack.emulator.stats()["upload_policies"] - before["upload_policies"] == 1
    other = stack.http.post("/v1/tasks", json={**body, "prompt": "other"}, headers={"Idempotency-Key": "large-1"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert stack.emulator.stats()["upload_policies"] - before["upload_policies"] == 1
    stack.wait_status(first.json()["id"], "ready")
    # One upload and one create at DashScope for the three requests.
    after = stack.emulator.stats()
    assert after["upload_policies"] - before["upload_policies"] == 1 and after["creates"] - before["creates"] == 1

    # A queue of one for this server: the second large create is refused before anything is uploaded.
    stack.server.stop()
    stack.serve(stack.port, "--no-workers", env={"WANHOOK_MAX_QUEUED_PER_TOKEN": "1"})
    assert stack.http.post("/v1/tasks", json={"prompt": "a fox", "size": "832*480"}).status_code == 202
    before = stack.emulator.stats()
    full = stack.http.post("/v1/tasks", json=body)
    assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_queued", full.text
    assert stack.emulator.stats()["upload_policies"] == before["upload_policies"]


def test_a_decompression_bomb_is_a_422_naming_its_field(stack: Stack) -> None:
    """A PNG whose header claims 100000x100000 pixels: refused by its header, never decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )
    response = stack.http.post(
        "/v1/tasks", json={"prompt": "x", "kind": "i2v", "img_url": data_url(bomb, "image/png"), "resolution": "480P"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "img_url"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "i2v", "img_url": data_url(b"GIF89a not really")}, "img_url"),
        ({"kind": "i2v", "img_url": data_url(encoded(picture(200, 200, 0)))}, "img_url"),
        ({"kind": "i2v", "img_url": "data:image/jpeg;base64,@@@"}, "img_url"),
        ({"kind": "i2v", "img_url": "ftp://example.com/cat.jpg"}, "img_url"),
        ({"kind": "i2v"}, "img_url"),
        ({"kind": "kf2v", "first_frame_url": "https://example.com/a.jpg"}, "last_frame_url"),
        ({"kind": "i2v", "model": "wan2.2-t2v-plus", "img_url": "https://example.com/a.jpg"}, "model"),
        ({"kind": "text-to-video", "model": "wan2.2-i2v-plus", "img_url": "https://example.com/a.jpg"}, "model"),
        ({"kind": "i2v", "img_url": "https://example.com/a.jpg", "resolution": "4K"}, "resolution"),
        ({"kind": "video", "img_url": "https://example.com/a.jpg"}, "kind"),
        ({"img_url": "https://example.com/a.jpg"}, "img_url"),  # text-to-video takes no image
    ],
)
def test_bad_images_are_refused_and_nothing_is_stored(stack: Stack, body: dict[str, Any], field: str) -> None:
    response = stack.http.post("/v1/tasks", json={"prompt": "p", **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert _task_state(stack) == []
    assert stack.emulator.stats()["creates"] == 0


def _task_state(stack: Stack) -> list[str]:
    """Every Redis key a task leaves: the task, its indexes and queues (keys.py)."""
    return sorted(
        key
        for pattern in ("task:*", "tasks*", "owner:*", "queue:*", "idem:*", "changes:*")
        for key in stack.redis.keys("{wanhook}:" + pattern)
    )


def test_too_large_image_is_refused(stack: Stack) -> None:
    huge = "data:image/jpeg;base64," + "A" * (14 * 1024 * 1024)
    response = stack.http.post("/v1/tasks", json={"prompt": "p", "kind": "i2v", "img_url": huge})
    assert response.status_code == 422 and "10 MB" in response.json()["error"]["message"], response.text
    assert response.json()["error"]["field"] == "img_url"
    assert _task_state(stack) == [] and stack.emulator.stats()["creates"] == 0
    text_only = stack.http.post("/v1/tasks", json={"prompt": "p" * 70_000})
    assert text_only.status_code == 413  # text-to-video keeps its 64 KiB body


def wanhook_cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``wanhook ARGS`` run as a user runs it, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "wanhook.service.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_submit_image_done_when(stack: Stack, cat: Path) -> None:
    """`wanhook submit --image cat.jpg "the cat turns its head"` stores an MP4 whose first frame is the cat."""
    result = wanhook_cli(
        "submit",
        "--image",
        str(cat),
        "the cat turns its head",
        "--wait",
        "--timeout",
        "120",
        "--server",
        stack.url,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    video = Path(result.stdout.strip().splitlines()[-1])
    first, _, _ = frames(video)
    assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE


def test_submit_first_and_last_frame_from_a_file_and_a_url(
    stack: Stack, cat: Path, dog: Path, image_server: str, tmp_path: Path
) -> None:
    """`wanhook submit --first-frame cat.jpg --last-frame <URL> ""`: the file goes as base64, the URL as given
    (DashScope, here the emulator, downloads it); the stored video starts on the cat and ends on the dog."""
    (tmp_path / "www" / dog.name).write_bytes(dog.read_bytes())
    url = f"{image_server}/{dog.name}"
    result = wanhook_cli(
        "submit",
        "--first-frame",
        str(cat),
        "--last-frame",
        url,
        "--resolution",
        "480P",
        "",
        "--wait",
        "--timeout",
        "120",
        "--server",
        stack.url,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    video = Path(result.stdout.strip().splitlines()[-1])
    first, last, _ = frames(video)
    assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE
    assert difference(last, dog.read_bytes()) < FRAME_TOLERANCE
    [sent] = httpx.get(stack.emulator.url + "/_emulator/tasks").json()["tasks"]
    assert sent["model"] == "wan2.2-kf2v-flash" and sent["kind"] == "kf2v" and sent["resolution"] == "480P"
    [task_key] = stack.redis.keys("{wanhook}:task:*")
    parameters = json.loads(stack.redis.hget(task_key, "parameters"))
    assert parameters["last_frame_url"] == url and parameters["first_frame_url"].startswith("data:image/jpeg;base64,")


def test_submit_refuses_a_bad_local_image(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    result = wanhook_cli("submit", "--image", str(tmp_path / "notes.jpg"), "x", "--server", stack.url, timeout=60)
    assert result.returncode == 2 and "not an image" in result.stderr
    missing = wanhook_cli(
        "submit",
        "--first-frame",
        str(tmp_path / "none.jpg"),
        "--last-frame",
        str(tmp_path / "none.jpg"),
        "x",
        "--server",
        stack.url,
        timeout=60,
    )
    assert missing.returncode == 2 and "none.jpg" in missing.stderr
    assert _task_state(stack) == [] and stack.emulator.stats()["creates"] == 0


def test_unreachable_image_url_fails_the_task_with_dashscopes_reason(stack: Stack) -> None:
    """An image URL is passed on, not fetched by wanhook (docs/reference/http-api.md): one DashScope cannot download is
    refused by its create (400 InvalidParameter.DataInspection), and the task fails with that code and
    message. No DashScope task is made, nothing is downloaded or stored."""
    task = stack.create(
        "the cat turns its head", kind="i2v", img_url="http://127.0.0.1:9/cat.jpg", resolution="480P", size=None
    )
    assert task["parameters"]["img_url"] == "http://127.0.0.1:9/cat.jpg"  # as given
    failed = stack.wait_status(task["id"], "failed", "ready", timeout=60)
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "InvalidParameter.DataInspection", failed
    assert "download" in failed["error"]["message"], failed
    assert failed.get("video") is None and failed["dashscope"].get("task_id") is None, failed
    assert httpx.get(stack.emulator.url + "/_emulator/tasks").json() == {"tasks": []}
    assert not list(stack.data_dir.rglob("*.mp4"))


def test_image_kinds_by_rocketmq(
    tmp_path: Path, redis_url: str, processes: list[Process], cat: Path, dog: Path
) -> None:
    """The same path for the image kinds' events over RocketMQ: the emulator publishes, `wanhook consume` reads."""
    from ..support import free_port

    port = free_port()
    stack = Stack(
        tmp_path,
        redis_url,
        processes,
        "--rocketmq",
        "--rocketmq-port",
        str(port),
        "--rocketmq-topic",
        "dashscope-events",
        webhook=False,
    ).start()
    stack.consume(f"127.0.0.1:{port}", "dashscope-events")
    image = stack.create("over the topic", kind="i2v", img_url=data_url(cat.read_bytes()), resolution="480P", size=None)
    frames_task = stack.create(
        "",
        kind="kf2v",
        first_frame_url=data_url(cat.read_bytes()),
        last_frame_url=data_url(dog.read_bytes(), "image/png"),
        resolution="480P",
        size=None,
    )
    first, _, _ = frames(_stored(stack, image["id"]))
    assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE
    _, last, _ = frames(_stored(stack, frames_task["id"]))
    assert difference(last, dog.read_bytes()) < FRAME_TOLERANCE
    outcomes = [entry["outcome"] for _, entry in stack.redis.xrange("{wanhook}:events")]
    assert outcomes == ["applied", "applied"]
    stack.http.close()


@pytest.mark.xdist_group("rocketmq")  # on the worker that runs the real broker's tests (test_rocketmq.py)
@pytest.mark.parametrize("protocol", ["real", "real4"])
def test_image_kinds_through_a_real_rocketmq(
    request: pytest.FixtureRequest,
    protocol: str,
    tmp_path: Path,
    redis_url: str,
    processes: list[Process],
    cat: Path,
    dog: Path,
) -> None:
    """The same for a real Apache RocketMQ 5.x, read through 5.x gRPC and 4.x remoting: each kind's completion
    published as EventBridge's RocketMQ target sends it (Body ORIGINAL, Keys, Tag), with the key its create
    path gives it (image2video for first-and-last-frame)."""
    from ..rocketmq_backends import backend
    from ..system.test_rocketmq import cloud_event

    broker = backend(request, protocol)
    try:
        stack = Stack(tmp_path, redis_url, processes).start()
        stack.emulator.configure(drop_events=True)  # the events come only over the topic
        topic = broker.new_topic({broker.group: 16})
        stack.consume(broker.endpoints, topic, **broker.consumer_settings())
        image = stack.create(
            "over the topic", kind="i2v", img_url=data_url(cat.read_bytes()), resolution="480P", size=None
        )
        frames_task = stack.create(
            "",
            kind="kf2v",
            first_frame_url=data_url(cat.read_bytes()),
            last_frame_url=data_url(dog.read_bytes(), "image/png"),
            resolution="480P",
            size=None,
        )
        for task, path in ((image, "video-generation"), (frames_task, "image2video")):
            ds_task_id = stack.wait_status(task["id"], "submitted")["dashscope"]["task_id"]
            key = f"apikey:v1:aigc:{path}:video-synthesis:{task['model']}"
            broker.publish(topic, cloud_event(ds_task_id, unique_key=key), keys=[ds_task_id], tag="AsyncTaskFinish")
        first, _, _ = frames(_stored(stack, image["id"]))
        assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE
        first, last, _ = frames(_stored(stack, frames_task["id"]))
        assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE
        assert difference(last, dog.read_bytes()) < FRAME_TOLERANCE
        outcomes = [entry["outcome"] for _, entry in stack.redis.xrange("{wanhook}:events")]
        assert outcomes == ["applied", "applied"]
        stack.http.close()
    finally:
        broker.stop()


def test_events_of_other_dashscope_tasks_are_ignored(stack: Stack) -> None:
    """A completion of a task wanhook did not make (here wan2.6-i2v's, and an image model's) is acknowledged
    and ignored, whatever its kind."""
    # An image model's completion is another product's: ignored. A video task of no wanhook task (wan2.6-i2v
    # here) is kept aside for a day in case its create call is still on its way, as for any kind.
    for key, outcome in (
        ("apikey:v1:aigc:text2image:image-synthesis:wan2.2-t2i-plus", "ignored"),
        ("apikey:v1:aigc:video-generation:video-synthesis:wan2.6-i2v", "unknown_task"),
        ("apikey:v1:aigc:image2video:video-synthesis:wan2.1-kf2v-plus", "unknown_task"),
    ):
        event = {
            "id": f"evt-{key}",
            "source": "acs.dashscope",
            "type": "dashscope:System:AsyncTaskFinish",
            "specversion": "1.0",
            "data": {"task_id": f"ds-{key[-12:]}", "task_status": "SUCCEEDED", "user_api_unique_key": key},
        }
        response = stack.push(event)
        assert response.status_code == 200 and response.json()["outcome"] == outcome, (key, response.text)


def test_images_as_multipart_form_data(stack: Stack, cat: Path, dog: Path) -> None:
    """A form with the images as files makes the same task as the JSON body with data URLs."""
    response = stack.http.post(
        "/v1/tasks",
        data={
            "kind": "kf2v",
            "resolution": "480P",
            "duration": "5",
            "prompt_extend": "false",
            "metadata": '{"shot": "12"}',
        },
        files={
            "first_frame_url": ("cat.jpg", cat.read_bytes(), "image/jpeg"),
            "last_frame_url": ("dog.png", dog.read_bytes(), "image/png"),
        },
    )
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["metadata"] == {"shot": "12"} and task["parameters"]["prompt_extend"] is False
    # Shown by type, size and digest; the bytes stay with the task for DashScope.
    shown = task["parameters"]["last_frame_url"]
    assert shown.startswith("data:image/png;base64,…") and len(shown) < 100, shown
    encoded_dog = data_url(dog.read_bytes(), "image/png").split(",", 1)[1]
    assert f"({len(encoded_dog)} characters" in shown
    stored = stack.redis.hget("{wanhook}:task:" + task["id"], "parameters")
    assert json.loads(stored)["last_frame_url"] == data_url(dog.read_bytes(), "image/png")
    first, last, _ = frames(_stored(stack, task["id"]))
    assert difference(first, cat.read_bytes()) < FRAME_TOLERANCE
    assert difference(last, dog.read_bytes()) < FRAME_TOLERANCE


@pytest.mark.parametrize(
    ("data", "files", "status", "field"),
    [
        ({"kind": "i2v"}, {"img_url": ("notes.txt", b"plain text", "text/plain")}, 422, "img_url"),
        ({"kind": "i2v", "duration": "five"}, {"img_url": ("cat.jpg", None, "image/jpeg")}, 422, "duration"),
        ({"kind": "i2v", "audio": "yes"}, {"img_url": ("cat.jpg", None, "image/jpeg")}, 422, "audio"),
        ({"kind": "i2v"}, {"prompt": ("cat.jpg", None, "image/jpeg")}, 422, "prompt"),
    ],
)
def test_bad_forms_are_refused(
    stack: Stack, cat: Path, data: dict[str, str], files: dict[str, Any], status: int, field: str
) -> None:
    files = {
        name: (filename, content if content is not None else cat.read_bytes(), kind)
        for name, (filename, content, kind) in files.items()
    }
    response = stack.http.post("/v1/tasks", data=data, files=files)
    assert response.status_code == status and response.json()["error"]["field"] == field, response.text
    assert _task_state(stack) == []
    broken = stack.http.post(
        "/v1/tasks", content=b"--x\r\nnot a form", headers={"Content-Type": "multipart/form-data; boundary=y"}
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_form", broken.text
