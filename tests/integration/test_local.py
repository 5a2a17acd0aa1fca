"""Local development: "Run it locally, as in production" of docs/local.md, followed through real processes, and the
emulator wiring itself to `wanhook serve`."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import httpx

from wanhook.emulator.cli import DEFAULT_WEBHOOK_URL, add_arguments, push_token, serve_env, webhook_url

from ..support import ROOT, Emulator, Process, Wanhook, free_port, wait_for, wanhook


def clean_environment() -> dict[str, str]:
    """The environment of a fresh shell: none of wanhook's settings, the checkout importable from anywhere."""
    kept = {key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))}
    return {**kept, "PYTHONPATH": str(ROOT)}


def local_section() -> tuple[list[str], list[str], list[str]]:
    """The three terminals' commands, as docs/local.md gives them."""
    readme = (ROOT / "docs" / "local.md").read_text()
    section = readme.split("## Run it locally, as in production\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 3, blocks
    emulator, serve, submit = ([line for line in block.splitlines() if line.strip()] for block in blocks)
    return emulator, serve, submit


def events_counted(server: str) -> dict[str, float]:
    """wanhook_events_total by outcome, from serve's /metrics: what the webhook recorded."""
    counted = {}
    for line in httpx.get(server + "/metrics", timeout=10).text.splitlines():
        if line.startswith("wanhook_events_total{"):
            labels, value = line.rsplit(" ", 1)
            counted[labels.split('outcome="', 1)[1].split('"', 1)[0]] = float(value)
    return counted


def forged_push(server: str, ds_id: str, **headers: str) -> httpx.Response:
    """A program's push (no browser headers, so only the token stands in its way) failing the task."""
    from .test_deletion import event

    return httpx.post(
        server + "/v1/events/dashscope",
        content=json.dumps(event(ds_id, "FAILED", event_id=f"forged-{ds_id}")),
        headers={"content-type": "application/json", **headers},
        timeout=10,
    )


def exported(line: str) -> dict[str, str]:
    words = shlex.split(line)
    assert words[0] == "export", line
    return dict(word.split("=", 1) for word in words[1:])


def test_the_readme_local_section_ends_ready(tmp_path: Path, processes: list[Process]) -> None:
    emulator_lines, serve_lines, submit_lines = local_section()
    assert emulator_lines == ["wanhook emulator"]
    assert len(serve_lines) == 2 and serve_lines[1] == "wanhook serve"
    [submit_line] = submit_lines
    # The page's ports (8090, 8000) may be taken on a shared machine: its "Other ports" item, as it says.
    emulator_port, serve_port = free_port(), free_port()
    server = f"http://127.0.0.1:{serve_port}"
    readme_env = {
        name: value.replace(":8090/", f":{emulator_port}/") for name, value in exported(serve_lines[0]).items()
    }

    # Terminal 1. (20 s of rendering by default; one is enough here.)
    emulator = Emulator(
        tmp_path, "--webhook-url", f"{server}/v1/events/dashscope", "--render-seconds", "1", port=emulator_port
    )
    emulator.env, emulator.cwd = clean_environment(), tmp_path
    processes.append(emulator.start())
    # It tells terminal 2 what the page does, and that nobody takes its events yet.
    printed = wait_for(
        lambda: "wanhook serve --port" in emulator.log() and emulator.log(), 10, what="the emulator's lines for serve"
    )
    export = next(line.strip() for line in printed.splitlines() if line.strip().startswith("export "))
    assert exported(export) == readme_env
    assert f"  wanhook serve --port {serve_port}\n" in printed
    wait_for(
        lambda: f"nothing answers at {server}/v1/events/dashscope yet" in emulator.log(),
        10,
        what="the emulator's warning",
    )

    # Terminal 2, in a fresh directory: the embedded Redis and the videos go under ./wanhook-data.
    serve = Wanhook(tmp_path, {}, port=serve_port)
    serve.env, serve.cwd = {**clean_environment(), **readme_env}, tmp_path
    processes.append(serve.start())
    wait_for(
        lambda: f"{server}/v1/events/dashscope answers now" in emulator.log(), 10, what="the emulator to see serve"
    )

    # Terminal 3.
    result = subprocess.run(
        [*wanhook(*shlex.split(submit_line)[1:]), "--server", server],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("task ")
    assert lines[-2].split()[1] == "ready", lines
    # serve names the video by its absolute path, under ./wanhook-data of where serve runs.
    video = Path(lines[-1])
    assert video.is_absolute()
    assert video.parent.resolve() == (tmp_path / "wanhook-data" / "videos").resolve() and video.stat().st_size > 0
    assert video.stem == lines[0].removeprefix("task ")


def test_the_emulator_pushes_to_serves_default_address_unless_told(tmp_path: Path, processes: list[Process]) -> None:
    port = free_port()
    # Started bare, as the page starts it (support's Emulator would add --no-webhook).
    bare = Process(f"emulator-{port}", wanhook("emulator", "--port", str(port)), tmp_path, clean_environment())
    processes.append(bare.start())
    url = f"http://127.0.0.1:{port}/_emulator/config"
    config = wait_for(lambda: httpx.get(url, timeout=2).json(), 30, what="the emulator")
    assert config["webhook_targets"] == [{"url": DEFAULT_WEBHOOK_URL, "token": None, "body": "original"}]
    assert DEFAULT_WEBHOOK_URL == "http://127.0.0.1:8000/v1/events/dashscope"

    quiet = Emulator(tmp_path, "--no-webhook")
    quiet.env = clean_environment()
    processes.append(quiet.start())
    assert httpx.get(quiet.url + "/_emulator/config", timeout=5).json()["webhook_targets"] == []
    wait_for(lambda: "warning: no event target (--no-webhook)" in quiet.log(), 10, what="the warning")


def test_dev_wires_the_emulator_and_serve_in_one_step(tmp_path: Path, processes: list[Process]) -> None:
    port, emulator_port = free_port(), free_port()
    server = f"http://127.0.0.1:{port}"
    dev = Process(
        f"dev-{port}",
        wanhook("dev", "--port", str(port), "--emulator-port", str(emulator_port), "--render-seconds", "1"),
        tmp_path,
        clean_environment(),
    )
    dev.cwd = tmp_path
    processes.append(dev.launch())
    hint = f'  wanhook submit "a paper boat drifting on a calm lake at dawn" --wait --server {server}\n'
    wait_for(lambda: hint in dev.log(), 60, what="wanhook dev to say how to submit")
    assert f"the emulator as its DashScope on http://127.0.0.1:{emulator_port}" in dev.log()
    result = subprocess.run(
        [*wanhook(*shlex.split(hint)[1:])],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr + dev.log()
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("task ") and lines[-2].split()[1] == "ready"
    assert (tmp_path / lines[-1]).stat().st_size > 0
    # The emulator's push, with the token of this run, is what made it ready (the sweeper would take 15 min).
    counted = events_counted(server)
    assert counted["applied"] >= 1, counted
    # Anything else that reaches the port has no token: refused before the body is read, nothing recorded.
    task = httpx.get(f"{server}/v1/tasks/{lines[0].removeprefix('task ')}", timeout=10).json()
    for headers in ({}, {"x-eventbridge-signature-token": ""}, {"x-eventbridge-signature-token": "guess"}):
        refused = forged_push(server, task["dashscope"]["task_id"], **headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "invalid_token"
    assert events_counted(server) == counted
    assert httpx.get(f"{server}/v1/tasks/{task['id']}", timeout=10).json()["status"] == "ready"
    assert "the webhook's token made for this run" in " ".join(dev.log().split())
    # A port in use: one line, before anything starts.
    taken = subprocess.run(
        wanhook("dev", "--port", str(port), "--emulator-port", str(free_port())),
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert taken.returncode == 2
    assert taken.stderr.strip() == f"wanhook dev: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_dev_takes_the_token_of_the_environment_and_never_prints_it(tmp_path: Path, processes: list[Process]) -> None:
    port, emulator_port = free_port(), free_port()
    server = f"http://127.0.0.1:{port}"
    token = "dev-token-" + os.urandom(8).hex()
    dev = Process(
        f"dev-{port}",
        wanhook("dev", "--port", str(port), "--emulator-port", str(emulator_port)),
        tmp_path,
        {**clean_environment(), "WANHOOK_EVENTBRIDGE_TOKEN": token, "WANHOOK_LOG_LEVEL": "DEBUG"},
    )
    dev.cwd = tmp_path
    processes.append(dev.launch())
    wait_for(lambda: "Ctrl-C stops both" in dev.log(), 60, what="wanhook dev to start")
    before = events_counted(server)
    assert forged_push(server, "ds-unknown").status_code == 401
    assert events_counted(server) == before
    # With the token set, a push is EventBridge's: recorded (kept aside, for a task not created yet).
    taken = forged_push(server, "ds-unknown", **{"x-eventbridge-signature-token": token})
    assert taken.status_code == 200, taken.text
    assert events_counted(server)["unknown_task"] == before["unknown_task"] + 1
    dev.stop()
    assert token not in dev.log()
    assert "events via webhook, the webhook's token from WANHOOK_EVENTBRIDGE_TOKEN" in " ".join(dev.log().split())


def test_the_emulator_takes_its_push_token_from_the_environment(tmp_path: Path, processes: list[Process]) -> None:
    token = "emulator-token-" + os.urandom(8).hex()
    emulator = Emulator(tmp_path, "--webhook-url", "http://127.0.0.1:9/v1/events/dashscope")
    emulator.env = {**clean_environment(), "WANHOOK_EVENTBRIDGE_TOKEN": token}
    processes.append(emulator.start())
    [target] = httpx.get(emulator.url + "/_emulator/config", timeout=5).json()["webhook_targets"]
    assert target["token"] == token
    # It tells serve's terminal which variable to set, not its value.
    printed = wait_for(lambda: "wanhook serve" in emulator.log() and emulator.log(), 10, what="the lines for serve")
    assert "# and WANHOOK_EVENTBRIDGE_TOKEN set to the emulator's push token (not printed)" in printed
    assert "events go to http://127.0.0.1:9/v1/events/dashscope, with the push token" in printed
    emulator.stop()
    assert token not in emulator.log()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_which_target_and_what_serve_needs() -> None:
    assert webhook_url(parse()) == DEFAULT_WEBHOOK_URL
    assert webhook_url(parse("--webhook-url", "http://127.0.0.1:9000/v1/events/dashscope")).endswith(
        ":9000/v1/events/dashscope"
    )
    # RocketMQ chosen: its stand-in gets the events, not a webhook nobody asked for.
    assert webhook_url(parse("--rocketmq")) is None
    assert webhook_url(parse("--no-webhook")) is None
    api = "http://127.0.0.1:8090/api/v1"
    assert serve_env(api, DEFAULT_WEBHOOK_URL, None) == (
        "  export DASHSCOPE_HTTP_BASE_URL=http://127.0.0.1:8090/api/v1 DASHSCOPE_API_KEY=sk-local "
        "WANHOOK_VIDEO_HOSTS=127.0.0.1\n  wanhook serve"
    )
    assert serve_env(api, "http://127.0.0.1:9000/v1/events/dashscope", "a b").splitlines() == [
        "  export DASHSCOPE_HTTP_BASE_URL=http://127.0.0.1:8090/api/v1 DASHSCOPE_API_KEY=sk-local "
        "WANHOOK_VIDEO_HOSTS=127.0.0.1",
        "  # and WANHOOK_EVENTBRIDGE_TOKEN set to the emulator's push token (not printed)",
        "  wanhook serve --port 9000",
    ]
    # The option first, then serve's own variable, else none.
    assert push_token(parse("--webhook-token", "T"), {"WANHOOK_EVENTBRIDGE_TOKEN": "E"}) == "T"
    assert push_token(parse(), {"WANHOOK_EVENTBRIDGE_TOKEN": "E"}) == "E"
    assert push_token(parse(), {"WANHOOK_EVENTBRIDGE_TOKEN": ""}) is None
