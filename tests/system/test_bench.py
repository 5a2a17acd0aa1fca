"""The benchmarks' smoke run: every benchmark at tiny sizes, so none of them can rot unnoticed.

It runs in a subprocess, as ``make bench`` does, without wrk if the machine has none (the ingest
benchmark then drives the load with its Python generator).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from ..support import ROOT

# Figures that count events which should not happen: zero is the expected value there.
COUNTS = {"429s"}


def test_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    results, chart, readme = tmp_path / "results.json", tmp_path / "latency.png", tmp_path / "README.md"
    readme.write_text("before\n<!-- bench:start -->\nold\n<!-- bench:end -->\nafter\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--smoke",
            "--output",
            str(results),
            "--chart",
            str(chart),
            "--readme",
            str(readme),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(results.read_text())
    for prefix in (
        "ingest_",
        "event_to_first_byte_",
        "time_to_know_",
        "dashscope_reads_per_task",
        "download_",
        "quota_",
        "redis_bytes_per_",
        "receiver_two_workers",
    ):
        assert any(name.startswith(prefix) for name in figures), f"no {prefix}* figure in {sorted(figures)}"
    for name, row in figures.items():
        assert {"value", "unit", "baseline", "ratio", "label", "against"} <= row.keys(), name
        assert math.isfinite(row["value"]) and math.isfinite(row["baseline"]), (name, row)
        if row["unit"] in COUNTS:
            assert row["value"] >= 0 and row["baseline"] >= 0, (name, row)
        else:
            assert row["value"] > 0 and row["baseline"] > 0 and row["ratio"] > 0, (name, row)
    assert figures["dashscope_reads_per_task"]["value"] <= 1.0
    assert figures["quota_429s"]["value"] == 0
    text = readme.read_text()
    assert text.startswith("before\n<!-- bench:start -->\n| figure |") and text.endswith("<!-- bench:end -->\nafter\n")
    assert "old" not in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_emulator_render_times_are_drawn_from_the_prompt() -> None:
    from wanhook.emulator.config import EmulatorConfig

    config = EmulatorConfig(render_seconds=2.0, render_seconds_max=10.0)
    times = [config.render_time(f"prompt {n}") for n in range(50)]
    assert all(2.0 <= t <= 10.0 for t in times) and len(set(times)) == 50
    assert config.render_time("prompt 7") == times[7]
    assert EmulatorConfig(render_seconds=3.0).render_time("anything") == 3.0


def test_emulator_streams_a_padded_video_from_disk(tmp_path: Path) -> None:
    import hashlib

    import httpx

    from ..support import Emulator, wait_for

    size = 40 << 20  # over the emulator's in-memory limit, so it streams from disk
    emulator = Emulator(tmp_path, "--render-seconds", "0").start()
    try:
        emulator.configure(enforce_limits=False, video_pad_bytes=size)
        api = httpx.Client(base_url=emulator.api, headers={"Authorization": "Bearer k", "X-DashScope-Async": "enable"})
        body = {"model": "wan2.2-t2v-plus", "input": {"prompt": "padded"}, "parameters": {"size": "832*480"}}
        task_id = api.post("/services/aigc/video-generation/video-synthesis", json=body).json()["output"]["task_id"]
        url = wait_for(lambda: api.get(f"/tasks/{task_id}").json()["output"].get("video_url"), 60, 0.1)
        whole = httpx.get(url, timeout=60)
        assert whole.status_code == 200 and len(whole.content) == size
        assert whole.headers["etag"] == f'"{hashlib.md5(whole.content).hexdigest().upper()}"'
        # The padding is one MP4 "free" box with a 64-bit size (size field 1, then the real size) to the end.
        box = whole.content.rindex(b"free") - 4
        assert whole.content[box : box + 4] == b"\0\0\0\1"
        assert int.from_bytes(whole.content[box + 8 : box + 16], "big") == size - box
        part = httpx.get(url, headers={"Range": "bytes=100-199", "If-Range": whole.headers["etag"]})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{size}"
        assert httpx.get(url, headers={"Range": "bytes=100-", "If-Range": '"other"'}).status_code == 200
        emulator.configure(break_downloads=1, break_after_bytes=1 << 20)
        with httpx.stream("GET", url) as broken:
            received = 0
            try:
                for chunk in broken.iter_raw():
                    received += len(chunk)
            except httpx.TransportError:
                pass
        assert received == 1 << 20
    finally:
        emulator.stop()
