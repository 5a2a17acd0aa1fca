"""audio_url and shot_type from POST /v1/tasks to DashScope's create call, through real processes.

Which models take which parameter is the emulator's own statement of DashScope's rules
(``emulator/rules.py``): a task passes only if wanhook sends what that model documents.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..conftest import Stack
from ..support import wait_for

AUDIO = "https://example.com/track.mp3"


def emulator_record(stack: Stack, ds_task_id: str) -> dict[str, Any]:
    tasks = httpx.get(stack.emulator.url + "/_emulator/tasks", timeout=10).json()["tasks"]
    return next(task for task in tasks if task["task_id"] == ds_task_id)


def submitted(stack: Stack, task_id: str) -> dict[str, Any]:
    task = wait_for(lambda: (t := stack.task(task_id))["dashscope"]["task_id"] and t, 30, what="the create call")
    return emulator_record(stack, task["dashscope"]["task_id"])


def test_new_parameters_reach_dashscope(stack: Stack) -> None:
    stack.emulator.configure(render_seconds=30)  # they stay PENDING or RUNNING: only the create is looked at
    multi = stack.create(
        "a heist in three shots", model="wan2.6-t2v", size="1280*720", duration=12, shot_type="multi", audio_url=AUDIO
    )
    assert multi["parameters"] == {"size": "1280*720", "duration": 12, "shot_type": "multi", "audio_url": AUDIO}
    dubbed = stack.create("rain on a tin roof", model="wan2.5-t2v-preview", duration=10)
    single = stack.create("a brass band", model="wan2.6-t2v", size="1920*1080", shot_type="single")
    plain = stack.create("a quiet pond")  # wan2.2: silent, takes neither

    record = submitted(stack, multi["id"])
    assert (record["model"], record["shot_type"], record["audio_url"], record["sound"], record["duration"]) == (
        "wan2.6-t2v",
        "multi",
        AUDIO,
        "audio_url",
        12,
    )
    # Without audio_url, wan2.5 and wan2.6 dub the video themselves (emulator/rules.py, 设置音频参数).
    record = submitted(stack, dubbed["id"])
    assert (record["sound"], record["audio_url"], record["shot_type"], record["duration"]) == ("dubbed", None, None, 10)
    record = submitted(stack, single["id"])
    assert (record["sound"], record["shot_type"]) == ("dubbed", "single")
    record = submitted(stack, plain["id"])
    assert (record["sound"], record["audio_url"], record["shot_type"]) == (None, None, None)


def test_refused_for_models_that_do_not_take_them(stack: Stack) -> None:
    before = stack.emulator.stats()["creates"]
    for body in (
        {"model": "wan2.2-t2v-plus", "audio_url": AUDIO},
        {"model": "wanx2.1-t2v-turbo", "shot_type": "single"},
        {"model": "wan2.5-t2v-preview", "shot_type": "multi"},
    ):
        response = stack.http.post("/v1/tasks", json={"prompt": "p", **body})
        field = next(name for name in body if name != "model")
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
        assert body["model"] in response.json()["error"]["message"]
    assert stack.emulator.stats()["creates"] == before


def test_submit_flags(stack: Stack) -> None:
    from .test_cli import run

    stack.emulator.configure(render_seconds=30)
    result = run(
        "submit",
        "two shots of a lighthouse",
        "--model",
        "wan2.6-t2v",
        "--size",
        "1280*720",
        "--shot-type",
        "multi",
        "--audio-url",
        AUDIO,
        "--server",
        stack.url,
    )
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["parameters"] == {"size": "1280*720", "shot_type": "multi", "audio_url": AUDIO}
    record = submitted(stack, task["id"])
    assert (record["shot_type"], record["audio_url"], record["sound"]) == ("multi", AUDIO, "audio_url")
    refused = run("submit", "p", "--shot-type", "multi", "--server", stack.url)  # wan2.2 takes no shot_type
    assert refused.returncode == 2 and "shot_type" in refused.stderr
