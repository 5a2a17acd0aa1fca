"""Supervision: a worker loop that crashes, and the embedded Redis killed, through real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import redis

from wanhook.service.jobs.supervisor import Supervisor
from wanhook.service.persistence import audit, keys

from ..conftest import TOKEN, Stack
from ..support import Emulator, Process, Wanhook, free_port, wait_for

EVENT = {
    "specversion": "1.0",
    "source": "acs.dashscope",
    "type": "dashscope:System:AsyncTaskFinish",
    "data": {
        "task_status": "FAILED",
        "user_api_unique_key": "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus",
    },
}


async def test_supervisor_restarts_a_crashing_loop_with_growing_delays() -> None:
    supervisor = Supervisor(first_delay=0.05, max_delay=0.2)
    stop = asyncio.Event()
    starts: list[float] = []
    seen_down: list[dict] = []

    async def flaky(stop: asyncio.Event) -> None:
        starts.append(time.monotonic())
        if len(starts) <= 4:
            raise RuntimeError(f"crash {len(starts)}")
        await stop.wait()

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()

    async def watch() -> None:
        while len(starts) < 5:
            seen_down.append(supervisor.down())
            await asyncio.sleep(0.005)
        stop.set()

    await asyncio.wait_for(asyncio.gather(supervisor.run({"flaky": flaky, "steady": steady}, stop), watch()), 10)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    for gap, delay in zip(gaps, (0.05, 0.1, 0.2, 0.2), strict=True):  # doubling, then capped
        assert delay * 0.9 <= gap < delay + 0.15, gaps
    assert any("flaky" in down for down in seen_down) and not any("steady" in down for down in seen_down)
    assert supervisor.down() == {} and supervisor.restarts == {"flaky": 4}


def test_a_crashed_worker_loop_is_logged_restarted_and_unready_meanwhile(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env["WANHOOK_SWEEP_INTERVAL_SECONDS"] = "0.5"
    stack.start()
    assert stack.http.get("/readyz").status_code == 200
    # Data the sweeper cannot read: no wanhook process writes a task id that is not UTF-8, and reading
    # it raises in the sweeper's loop (and again on every restart, while it is there).
    stack.redis.zadd("{wanhook}:sweep", {b"\xff\xfe-not-a-task-id": 0})

    def unready() -> dict | None:
        answer = stack.http.get("/readyz")
        return answer.json() if answer.status_code == 503 else None

    down = wait_for(unready, 20, interval=0.02, what="/readyz to say the sweeper is down")
    assert down["error"] == {"code": "worker_loop_down", "message": "worker loops down, being restarted: sweeper"}
    assert stack.http.get("/healthz").status_code == 200  # alive: the loop is being restarted
    crash = wait_for(
        lambda: next(
            (
                line
                for line in map(json.loads, stack.server.log().splitlines())
                if "worker loop sweeper crashed" in line["message"]
            ),
            None,
        ),
        10,
        what="the crash in the log",
    )
    assert crash["level"] == "error" and "Traceback" in crash["error"] and "UnicodeDecodeError" in crash["error"]
    # The other loops go on meanwhile: a task is submitted, rendered, downloaded.
    assert stack.wait_status(stack.create("a kingfisher over a stream")["id"], "ready")["video"]

    # Repaired; and a task id the sweeper drops once it sweeps again (it knows no such task).
    stack.redis.zrem("{wanhook}:sweep", b"\xff\xfe-not-a-task-id")
    stack.redis.zadd("{wanhook}:sweep", {"no-such-task": 0})
    wait_for(
        lambda: stack.redis.zscore("{wanhook}:sweep", "no-such-task") is None,
        40,
        interval=0.05,
        what="the restarted sweeper to sweep",
    )
    wait_for(lambda: stack.http.get("/readyz").status_code == 200, 10, interval=0.05, what="readiness again")
    assert "worker loop sweeper restarted" in stack.server.log()


def embedded_serve(tmp_path: Path, processes: list[Process], emulator: Emulator | None = None) -> Wanhook:
    """serve with the embedded Redis (no WANHOOK_REDIS_URL) in ``tmp_path / "data"``."""
    env = {
        "WANHOOK_REDIS_URL": "",
        "WANHOOK_DATA_DIR": str(tmp_path / "data"),
        "DASHSCOPE_API_KEY": "sk-test-key",
        "WANHOOK_EVENTBRIDGE_TOKEN": TOKEN,
        "WANHOOK_VIDEO_HOSTS": "127.0.0.1",
    }
    if emulator is not None:
        env["DASHSCOPE_HTTP_BASE_URL"] = emulator.api
    server = Wanhook(tmp_path, env, port=free_port())
    processes.append(server.launch())
    server.wait_ready()
    return server


def embedded_client(tmp_path: Path) -> redis.Redis:
    return redis.Redis(
        unix_socket_path=str(tmp_path / "data" / "redis" / "redis.sock"), decode_responses=True, socket_timeout=5
    )


def redis_pid(tmp_path: Path, serve: Wanhook) -> int:
    """The embedded redis-server's pid (INFO server), checked to be serve's child."""
    client = embedded_client(tmp_path)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    assert parent_of(pid) == serve.proc.pid
    return pid


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def redis_servers_on(socket_path: Path) -> list[int]:
    """Every running redis-server serving ``socket_path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "redis-server" in command and str(socket_path) in command and running(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_killed_embedded_redis_is_restarted_and_loses_no_event(tmp_path: Path, processes: list[Process]) -> None:
    port = free_port()
    emulator = Emulator(
        tmp_path,
        "--render-seconds",
        "0.3",
        "--webhook-url",
        f"http://127.0.0.1:{port}/v1/events/dashscope",
        "--webhook-token",
        TOKEN,
    )
    processes.append(emulator.launch())
    emulator.wait_ready()
    env = {
        "WANHOOK_REDIS_URL": "",
        "WANHOOK_DATA_DIR": str(tmp_path / "data"),
        "DASHSCOPE_API_KEY": "sk-test-key",
        "DASHSCOPE_HTTP_BASE_URL": emulator.api,
        "WANHOOK_EVENTBRIDGE_TOKEN": TOKEN,
        "WANHOOK_VIDEO_HOSTS": "127.0.0.1",
    }
    serve = Wanhook(tmp_path, env, port=port)
    processes.append(serve.launch())
    serve.wait_ready()
    http = httpx.Client(base_url=serve.url, timeout=10)

    def create_and_finish(prompt: str) -> dict:
        task = http.post("/v1/tasks", json={"prompt": prompt, "size": "832*480"}).json()

        def ended() -> dict | None:
            current = http.get(f"/v1/tasks/{task['id']}").json()
            return current if current["status"] in ("ready", "failed") else None

        return wait_for(ended, 60, interval=0.1, what=f"task {task['id']} to end")

    assert create_and_finish("before the kill")["status"] == "ready"
    first_pid = redis_pid(tmp_path, serve)

    # Pushes go on before, during and after the kill; every one answered 2xx must be recorded.
    acknowledged: list[str] = []
    refused: list[int] = []
    stop_pushing = threading.Event()

    def push() -> None:
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            n = 0
            while not stop_pushing.is_set():
                event_id = f"evt-{n}"
                n += 1
                event = {**EVENT, "id": event_id, "data": {**EVENT["data"], "task_id": f"ds-{event_id}"}}
                try:
                    answer = client.post(
                        "/v1/events/dashscope", json=event, headers={"x-eventbridge-signature-token": TOKEN}
                    )
                except httpx.HTTPError:
                    refused.append(0)
                    continue
                if answer.status_code // 100 == 2:
                    acknowledged.append(event_id)
                else:
                    refused.append(answer.status_code)

    pusher = threading.Thread(target=push)
    pusher.start()
    try:
        wait_for(lambda: len(acknowledged) >= 50, 30, what="pushes before the kill")
        os.kill(first_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        count_at_kill = len(acknowledged)
        wait_for(lambda: not running(first_pid), 10, interval=0.01, what="the kill")

        def ready_again() -> bool:
            return http.get("/readyz").status_code == 200 and redis_pid(tmp_path, serve) != first_pid

        wait_for(ready_again, 30, interval=0.01, what="serve ready again on a new embedded Redis")
        recovery = time.monotonic() - killed_at
        wait_for(lambda: len(acknowledged) >= count_at_kill + 50, 30, what="pushes after the restart")
    finally:
        stop_pushing.set()
        pusher.join(30)

    client = embedded_client(tmp_path)
    recorded = {audit.read_entry(fields)["id"] for _, fields in client.xrange("{wanhook}:events")}
    lost = [event_id for event_id in acknowledged if event_id not in recorded]
    assert not lost, f"{len(lost)} acknowledged events lost: {lost[:5]}"
    # Their early records too, within their bound (the newest are kept).
    kept = acknowledged[-keys.EARLY_EVENTS_MAX :]
    assert all(client.exists(f"{{wanhook}}:early:ds-{event_id}") for event_id in kept)
    client.close()
    assert f"the embedded Redis (pid {first_pid}) died; restarting it from its AOF" in serve.log()
    # The workers found their way back too.
    assert create_and_finish("after the restart")["status"] == "ready"
    print(
        f"\nembedded Redis killed: ready again after {recovery * 1000:.0f} ms; {len(acknowledged)} events "
        f"acknowledged, all recorded; {len(refused)} refused meanwhile (retried by EventBridge)"
    )

    second_pid = redis_pid(tmp_path, serve)
    serve.stop()  # SIGTERM
    assert serve.proc.returncode is not None
    assert not running(second_pid)
    assert redis_servers_on(tmp_path / "data" / "redis" / "redis.sock") == []
    http.close()


def test_embedded_redis_that_cannot_come_back_fails_healthz(tmp_path: Path, processes: list[Process]) -> None:
    serve = embedded_serve(tmp_path, processes)
    client = embedded_client(tmp_path)
    client.set("kept", "1")
    client.close()
    aof = tmp_path / "data" / "redis" / "appendonly.aof"
    backup = aof.with_name("backup.aof")
    backup.write_bytes(aof.read_bytes())
    # The server keeps writing the file it has open; the one a restart would load is now unreadable.
    garbage = aof.with_name("garbage.aof")
    garbage.write_bytes(b"this is not an append-only file\r\n")
    os.replace(garbage, aof)
    pid = redis_pid(tmp_path, serve)
    os.kill(pid, signal.SIGKILL)

    def unhealthy() -> dict | None:
        answer = httpx.get(serve.url + "/healthz", timeout=5)
        return answer.json() if answer.status_code == 503 else None

    health = wait_for(unhealthy, 20, interval=0.02, what="/healthz to report the embedded Redis down")
    assert health["status"] == "embedded_redis_down" and health["embedded_redis"]["state"] == "restarting"
    ready = httpx.get(serve.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "embedded_redis_down"
    wait_for(lambda: "exited at start" in serve.log(), 20, what="the failed restart in the log")

    os.replace(backup, aof)  # repaired: the next attempt (1 s, 2 s, 4 s... apart) starts it
    wait_for(
        lambda: httpx.get(serve.url + "/healthz", timeout=5).status_code == 200,
        40,
        interval=0.05,
        what="/healthz again",
    )
    wait_for(lambda: httpx.get(serve.url + "/readyz", timeout=5).status_code == 200, 20, what="/readyz again")
    client = embedded_client(tmp_path)
    assert client.get("kept") == "1"
    client.close()

    # SIGINT (Ctrl-C) stops it too.
    last_pid = redis_pid(tmp_path, serve)
    serve.proc.send_signal(signal.SIGINT)
    serve.proc.wait(20)
    assert not running(last_pid)
    assert redis_servers_on(tmp_path / "data" / "redis" / "redis.sock") == []


def test_processes_on_one_data_directory_hand_the_embedded_redis_over(tmp_path: Path, processes: list[Process]) -> None:
    socket_path = tmp_path / "data" / "redis" / "redis.sock"
    owner = embedded_serve(tmp_path, processes)
    client = embedded_client(tmp_path)
    client.set("written", "through the first owner")
    client.close()
    first = redis_pid(tmp_path, owner)
    env = {"WANHOOK_REDIS_URL": "", "WANHOOK_DATA_DIR": str(tmp_path / "data"), "DASHSCOPE_API_KEY": "sk-test-key"}
    worker = Wanhook(tmp_path, env, name="worker", port=free_port())
    processes.append(worker.start())
    wait_for(lambda: "using the embedded Redis of another process" in worker.log(), 30, what="the worker to join")

    # The owner stops, and its Redis with it; the worker takes over and starts it again from its AOF.
    owner.stop()
    assert not running(first)
    wait_for(lambda: len(redis_servers_on(socket_path)) == 1, 30, interval=0.02, what="the worker's Redis")
    [second] = redis_servers_on(socket_path)
    assert parent_of(second) == worker.proc.pid
    client = embedded_client(tmp_path)
    assert client.get("written") == "through the first owner"
    client.close()

    # A process killed outright leaves its Redis running; the next one on the data directory adopts it,
    # and stops it when it stops.
    worker.kill()
    assert running(second)
    adopter = embedded_serve(tmp_path, processes)
    assert "adopted the embedded Redis left running" in adopter.log()
    assert httpx.get(adopter.url + "/readyz", timeout=5).status_code == 200
    adopter.stop()
    assert not running(second) and redis_servers_on(socket_path) == []
