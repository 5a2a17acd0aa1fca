"""The videos tasks produce: rendered once per (size, prompt, duration) and kept on disk and in memory.

Padded copies (large downloads) are kept on disk only.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import tempfile
import textwrap
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FPS = 30
# Part of the cache key, so a change to the picture never serves stale files from an old cache.
RENDER_VERSION = "1"
PAD_HEADER = 16  # a "free" box with a 64-bit size
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "wanhook-emulator-videos"


@dataclass(frozen=True)
class Video:
    key: str
    path: Path
    length: int
    etag: str  # as OSS writes it: the upper-case MD5 in quotes
    last_modified: float


def parse_size(size: str) -> tuple[int, int]:
    """Width and height of a DashScope size, written "W*H"."""
    width, height = size.split("*")
    return int(width), int(height)


def cache_key(size: str, prompt: str, seconds: int, images: tuple[bytes, ...] = ()) -> str:
    material = f"{RENDER_VERSION}\n{size}\n{seconds}\n{prompt}".encode()
    for image in images:
        material += b"\n" + hashlib.sha256(image).digest()
    return hashlib.sha256(material).hexdigest()[:32]


class VideoStore:
    """Renders on one worker thread (the machine has two cores and the event loop needs one)."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, memory_bytes: int = 256 << 20) -> None:
        self.dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.memory_bytes = memory_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emulator-render")
        self._videos: dict[str, Video] = {}
        self._rendering: dict[str, asyncio.Future[Video]] = {}
        self._bodies: OrderedDict[str, bytes] = OrderedDict()

    async def get(self, size: str, prompt: str, seconds: int, pad_to: int = 0, images: tuple[bytes, ...] = ()) -> Video:
        """The video; with ``pad_to``, a copy padded up to that many bytes (see ``pad``). With ``images``, it
        starts on the first (and ends on the second, if there are two)."""
        key = cache_key(size, prompt, seconds, images)
        video = await self._once(key, lambda: self._make(key, size, prompt, seconds, images))
        if pad_to < video.length + PAD_HEADER:
            return video
        return await self._once(f"{key}-{pad_to}", lambda: self._pad(video, pad_to))

    async def _once(self, key: str, make: Callable[[], Awaitable[Video]]) -> Video:
        if key in self._videos:
            return self._videos[key]
        if key not in self._rendering:
            future = asyncio.ensure_future(make())
            future.add_done_callback(lambda _: self._rendering.pop(key, None))
            self._rendering[key] = future
        # Shielded: one waiter giving up must not cancel the render others wait for.
        return await asyncio.shield(self._rendering[key])

    def body(self, video: Video) -> bytes:
        if video.key in self._bodies:
            self._bodies.move_to_end(video.key)
            return self._bodies[video.key]
        data = video.path.read_bytes()
        self._remember(video.key, data)
        return data

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _make(self, key: str, size: str, prompt: str, seconds: int, images: tuple[bytes, ...] = ()) -> Video:
        path = self.dir / f"{key}.mp4"
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(self._executor, _load_or_render, path, size, prompt, seconds, images)
        video = Video(key, path, len(data), f'"{hashlib.md5(data).hexdigest().upper()}"', path.stat().st_mtime)
        self._videos[key] = video
        self._remember(key, data)
        return video

    async def _pad(self, video: Video, size: int) -> Video:
        key = f"{video.key}-{size}"
        path = self.dir / f"{key}.mp4"
        loop = asyncio.get_running_loop()
        etag = await loop.run_in_executor(self._executor, pad, video.path, path, size)
        padded = Video(key, path, size, etag, path.stat().st_mtime)
        self._videos[key] = padded
        return padded

    def _remember(self, key: str, data: bytes) -> None:
        self._bodies[key] = data
        while sum(map(len, self._bodies.values())) > self.memory_bytes and len(self._bodies) > 1:
            self._bodies.popitem(last=False)


def _load_or_render(path: Path, size: str, prompt: str, seconds: int, images: tuple[bytes, ...] = ()) -> bytes:
    if not path.exists():
        width, height = parse_size(size)
        # Several emulator processes may share the cache: write aside, then rename atomically.
        partial = path.with_name(f"{path.stem}.{os.getpid()}.part")
        if images:
            render_images(partial, width, height, seconds, images)
        else:
            render(partial, width, height, seconds, prompt)
        os.replace(partial, path)
    return path.read_bytes()


def pad(source: Path, path: Path, size: int) -> str:
    """``source`` followed by an MP4 "free" box up to ``size`` bytes (players skip it); returns the ETag.

    The box's zeros are left as a hole in a sparse file, so a 1 GiB video costs no disk for them.
    """
    if not path.exists():
        data = source.read_bytes()
        partial = path.with_name(f"{path.stem}.{os.getpid()}.part")
        with open(partial, "wb") as file:
            file.write(data)
            # The 64-bit form of a box header (size 1, then the real size) fits any length.
            file.write(struct.pack(">I4sQ", 1, b"free", size - len(data)))
            file.truncate(size)
        os.replace(partial, path)
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return f'"{digest.hexdigest().upper()}"'


def render(path: Path, width: int, height: int, seconds: int, text: str) -> None:
    """An H.264 yuv420p MP4: the text over drifting colour, with a bar that fills as time passes."""
    alpha, luma, box = _text_layer(width, height, text)
    x, y = np.arange(width), np.arange(height)
    cx, cy = np.arange(width // 2), np.arange(height // 2)
    bar = max(4, height // 60)
    frames = seconds * FPS
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            t = index / FPS
            planes = _background(x, y, cx, cy, t)
            _blend(planes, alpha, luma, box)
            planes[0][-bar:, : width * (index + 1) // frames] = 235
            frame = av.VideoFrame.from_ndarray(_pack(planes, width, height), format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def render_images(path: Path, width: int, height: int, seconds: int, images: tuple[bytes, ...]) -> None:
    """An H.264 yuv420p MP4 that opens on ``images[0]`` and, given a second image, dissolves into it and ends
    on it; with one, the picture slowly brightens and darkens. A bar fills along the bottom in between (not
    on the first and last frames, which are the images themselves)."""
    first = _picture(images[0], width, height)
    last = _picture(images[1], width, height) if len(images) > 1 else None
    frames = seconds * FPS
    bar = max(4, height // 60)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "12"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            t = index / max(1, frames - 1)
            if last is not None:
                rgb = first * (1 - t) + last * t
            else:
                rgb = np.clip(first * (1 + 0.15 * np.sin(t * np.pi)), 0, 255)
            picture = rgb.astype(np.uint8)
            if 0 < index < frames - 1:
                picture[-bar:, : width * index // frames] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode(None))


def _picture(data: bytes, width: int, height: int) -> np.ndarray:
    """The image as RGB floats, scaled to fill width x height and cropped to it (centred)."""
    import io

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    scale = max(width / rgb.width, height / rgb.height)
    scaled = rgb.resize(
        (max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale))), Image.Resampling.LANCZOS
    )
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    return np.asarray(scaled.crop((left, top, left + width, top + height)), dtype=np.float32)


def _background(x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, t: float) -> list[np.ndarray]:
    # Separable waves: one row and one column per frame, broadcast into planes, keeps 1080p cheap.
    luma = (40 * np.sin(x * (6.28 / x.size) - t * 1.3))[None, :] + (30 * np.cos(y * (6.28 / y.size) + t))[:, None]
    u = (70 * np.sin(cx * (6.28 / cx.size) + t * 0.9))[None, :] + np.zeros((cy.size, 1))
    v = (70 * np.cos(cy * (6.28 / cy.size) - t * 0.7))[:, None] + np.zeros((1, cx.size))
    return [(luma + 110).astype(np.int32), (u + 128).astype(np.int32), (v + 128).astype(np.int32)]


def _blend(planes: list[np.ndarray], alpha: np.ndarray, luma: np.ndarray, box: tuple[int, int, int, int]) -> None:
    top, bottom, left, right = box
    region = planes[0][top:bottom, left:right]
    region += (alpha * (luma - region)) // 255
    # Chroma is subsampled 2x2: fade it to grey under the text so the letters read as white on black.
    small = alpha[::2, ::2]
    for plane in planes[1:]:
        region = plane[top // 2 : top // 2 + small.shape[0], left // 2 : left // 2 + small.shape[1]]
        region += (small[: region.shape[0], : region.shape[1]] * (128 - region)) // 255


def _pack(planes: list[np.ndarray], width: int, height: int) -> np.ndarray:
    quarter = (height // 4, width)
    y, u, v = (np.clip(plane, 16, 240).astype(np.uint8) for plane in planes)
    return np.concatenate([y, u.reshape(quarter), v.reshape(quarter)])


def _text_layer(width: int, height: int, text: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Coverage and luma of the wrapped, outlined text, cropped to where it is (blending touches only that)."""
    size = max(12, height // 10)
    while True:
        font = ImageFont.load_default(size=size)
        chars = max(8, int(width * 0.9 / max(1.0, font.getlength("abcdefghij") / 10)))
        lines = textwrap.wrap(text, chars, break_long_words=True) or [""]
        line_height = int(size * 1.25)
        if len(lines) * line_height <= height * 0.8 or size <= 12:
            break
        size = int(size * 0.85)
    fitting = int(height * 0.8) // line_height
    if len(lines) > fitting:
        lines = lines[: fitting - 1] + [lines[fitting - 1][: chars - 3] + "..."]
    stroke = max(1, size // 12)
    alpha, luma = Image.new("L", (width, height)), Image.new("L", (width, height))
    top = (height - len(lines) * line_height) // 2
    for row, line in enumerate(lines):
        left = (width - font.getlength(line)) / 2
        at = (left, top + row * line_height)
        ImageDraw.Draw(alpha).text(at, line, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
        ImageDraw.Draw(luma).text(at, line, font=font, fill=235, stroke_width=stroke, stroke_fill=16)
    box = alpha.getbbox() or (0, 0, 2, 2)
    # Even edges keep the crop aligned with the 2x2 chroma grid.
    left, upper, right, lower = box[0] & ~1, box[1] & ~1, min(width, (box[2] + 1) & ~1), min(height, (box[3] + 1) & ~1)
    crop = (left, upper, right, lower)
    a = np.asarray(alpha.crop(crop), dtype=np.int32)
    return a, np.asarray(luma.crop(crop), dtype=np.int32), (upper, lower, left, right)
