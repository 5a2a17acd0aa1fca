"""Videos in an S3-compatible object store, end to end against moto's S3 server (a real process, from PyPI):
upload (single and multipart) checked by size and sha256, the presigned redirect, streaming with Range,
an upload failed and retried, a restart between download and upload, deletion removing the object, an
upload failing for good (shown on the task, then the task failed), and a deletion while the store is down
(the object removed once it is back)."""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from wanhook.service.config import S3Config, Settings
from wanhook.service.outbound.objectstore import MULTIPART_THRESHOLD, S3Storage, Signer
from wanhook.service.outbound.storage import UploadFailed
from wanhook.service.persistence import keys

from ..conftest import Stack
from ..support import Process, free_port, http_ready, wait_for
from .test_download import fail_during_download

BUCKET = "wanhook-videos"
SECRET = "moto-secret-key-never-logged"


class Moto(Process):
    """``python -m moto.server`` on a port of its own; in memory, so a restart starts with no bucket."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(f"moto-{self.port}", [sys.executable, "-m", "moto.server", "-p", str(self.port)], log_dir)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> Moto:
        wait_for(http_ready(self.endpoint + "/moto-api/"), 30, what="moto server")
        return self

    def storage_env(self, **extra: str) -> dict[str, str]:
        return {
            "WANHOOK_STORAGE_URL": f"s3://{BUCKET}/wan/videos",
            "WANHOOK_S3_ENDPOINT": self.endpoint,
            "WANHOOK_S3_ADDRESSING": "path",  # moto on loopback has no bucket host names
            "WANHOOK_S3_ACCESS_KEY_ID": "test-access-key",
            "WANHOOK_S3_SECRET_ACCESS_KEY": SECRET,
            **extra,
        }

    def storage(self, tmp_path: Path) -> S3Storage:
        settings = Settings.from_env(self.storage_env())
        assert settings.object_store is not None
        return S3Storage(settings.object_store, tmp_path / "parts")

    def make_bucket(self) -> None:
        config = Settings.from_env(self.storage_env()).object_store
        assert config is not None
        url = f"{self.endpoint}/{BUCKET}"
        response = httpx.put(url, headers=Signer(config).headers("PUT", url))
        assert response.status_code == 200, response.text


class Relay(Process):
    """``tests/tcp_relay.py`` in front of moto: stopped, the store is unreachable (connections refused) while
    moto keeps what it holds; launched again on the same port, the store is back as it was."""

    def __init__(self, log_dir: Path, target: Moto, port: int | None = None) -> None:
        self.port = port or free_port()
        args = [sys.executable, "-m", "tests.tcp_relay", str(self.port), str(target.port)]
        super().__init__(f"relay-{self.port}", args, log_dir)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> Relay:
        def accepts() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_for(accepts, 30, what="the relay")
        return self


class Silent(Process):
    """``tests/silent_server.py``: an object store that accepts connections and never answers."""

    def __init__(self, log_dir: Path, port: int) -> None:
        self.port = port
        super().__init__(f"silent-{port}", [sys.executable, "-m", "tests.silent_server", str(port)], log_dir)

    def wait_ready(self) -> Silent:
        def accepts() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_for(accepts, 30, what="the silent server")
        return self


@pytest.fixture
def moto(tmp_path: Path, processes: list[Process]) -> Iterator[Moto]:
    server = Moto(tmp_path)
    processes.append(server.launch())
    server.wait_ready().make_bucket()
    yield server


def s3_stack(tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto, **env: str) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(moto.storage_env(**env))
    return stack.start()


def head(storage: S3Storage, task_id: str) -> httpx.Response | None:
    return storage._head(task_id)


def test_publish_multipart_presign_and_remove(tmp_path: Path, moto: Moto) -> None:
    storage = moto.storage(tmp_path)
    data = os.urandom(MULTIPART_THRESHOLD + (3 << 20))  # three parts: 8 + 8 + 3 MiB
    with storage.open_part("t-big") as part:
        part.write(data)
        sha256 = hashlib.sha256(data).hexdigest()  # as the download computed it
        assert storage.publish("t-big", part, sha256) == f"s3://{BUCKET}/wan/videos/t-big.mp4"
    assert not list((tmp_path / "parts").iterdir())  # uploaded and checked: the local copy is gone
    assert storage.stored_size("t-big") == len(data)
    assert storage.sha256("t-big") == hashlib.sha256(data).hexdigest()

    fetched = httpx.get(storage.presigned_url("t-big"))
    assert fetched.status_code == 200 and fetched.content == data

    assert storage.remove("t-big") is True
    assert storage.stored_size("t-big") is None
    assert storage.remove("t-big") is False  # twice is harmless


@pytest.mark.parametrize("size", [1 << 20, MULTIPART_THRESHOLD + (1 << 20)], ids=["put", "multipart"])
def test_a_part_file_that_changed_since_its_download_is_not_stored(tmp_path: Path, moto: Moto, size: int) -> None:
    """The bytes uploaded are hashed as they are read and checked against the download's sha256: a part file
    that no longer matches (changed on the disk) is refused before any object exists, and is kept."""
    storage = moto.storage(tmp_path)
    data = os.urandom(size)
    with storage.open_part("t-changed") as part:
        part.write(data)
        with pytest.raises(UploadFailed, match="no longer matches the sha256 of its download"):
            storage.publish("t-changed", part, hashlib.sha256(b"what was downloaded").hexdigest())
    assert storage.stored_size("t-changed") is None  # no object, not even a multipart upload completed
    assert (tmp_path / "parts" / "t-changed.mp4.part").read_bytes() == data  # the part file stays


def test_signatures_match_the_aws_examples() -> None:
    """moto does not check signatures, so the signer is checked against the examples in AWS's SigV4 docs."""
    config = S3Config(
        bucket="examplebucket",
        prefix="",
        endpoint="https://s3.amazonaws.com",
        region="us-east-1",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )
    now = datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC)
    url = config.url("test.txt")
    assert url == "https://examplebucket.s3.amazonaws.com/test.txt"
    signed = Signer(config).headers("GET", url, headers={"Range": "bytes=0-9"}, now=now)
    assert signed["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    presigned = Signer(config).presign("GET", url, 86400, now=now)
    assert presigned.endswith(
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404&X-Amz-SignedHeaders=host"
    )
    assert config.secret_key not in repr(config)


def test_flow_with_videos_in_s3(tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto) -> None:
    stack = s3_stack(tmp_path, redis_url, processes, moto)
    created = stack.create("a lighthouse in a storm")
    task = stack.wait_status(created["id"], "ready")
    video = task["video"]
    assert video["path"] == f"s3://{BUCKET}/wan/videos/{created['id']}.mp4"
    assert video["bytes"] > 0
    # Nothing of the video stays on local disk.
    assert not [p for p in (stack.data_dir / "videos").iterdir() if p.is_file()]

    storage = moto.storage(tmp_path)
    stored = head(storage, created["id"])
    assert stored is not None
    assert int(stored.headers["content-length"]) == video["bytes"]
    assert stored.headers["x-amz-meta-sha256"] == video["sha256"]

    # A short-lived presigned redirect, which a client follows to the bytes.
    answer = stack.http.get(f"/v1/tasks/{created['id']}/video")
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(f"{moto.endpoint}/{BUCKET}/wan/videos/{created['id']}.mp4?")
    assert "X-Amz-Expires=300" in location and SECRET not in location
    followed = stack.http.get(f"/v1/tasks/{created['id']}/video", follow_redirects=True)
    assert followed.status_code == 200
    assert hashlib.sha256(followed.content).hexdigest() == video["sha256"]

    # Streamed through wanhook, with Range, by setting.
    streaming = stack.serve(env={"WANHOOK_S3_SERVE": "stream"})
    with httpx.Client(base_url=streaming.url, timeout=30) as client:
        whole = client.get(f"/v1/tasks/{created['id']}/video")
        assert whole.status_code == 200 and whole.content == followed.content
        assert whole.headers["content-type"] == "video/mp4"
        part = client.get(f"/v1/tasks/{created['id']}/video", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == followed.content[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{video['bytes']}"

    # Deletion removes the object.
    deleted = stack.http.delete(f"/v1/tasks/{created['id']}")
    assert deleted.status_code == 200 and deleted.json()["removed"]["video"] is True
    assert head(storage, created["id"]) is None
    assert httpx.get(location).status_code == 404

    for process in processes:
        if process.name.startswith("serve"):
            assert SECRET not in process.log()


def test_failed_upload_is_retried_and_survives_a_restart(
    tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto
) -> None:
    stack = s3_stack(tmp_path, redis_url, processes, moto)
    moto.stop()  # the object store is down: the download completes, its upload fails
    created = stack.create("a harbour at dusk")
    part = stack.data_dir / "videos" / f"{created['id']}.mp4.part"
    wait_for(lambda: "uploading again" in stack.server.log(), 60, what="a failed upload retried")
    task = stack.http.get(f"/v1/tasks/{created['id']}").json()
    assert task["status"] == "downloading"
    assert task["error"]["code"] == "UploadFailed" and task["error"]["attempts"] >= 1  # the failure shows
    size = part.stat().st_size
    assert size > 0

    # Killed between download and upload; the store comes back; a new process publishes the part file.
    stack.server.kill()
    served_before = stack.emulator.stats()
    moto.launch()
    moto.wait_ready().make_bucket()
    stack.server = stack.serve(stack.port)
    task = stack.wait_status(created["id"], "ready", timeout=60)
    assert task["video"]["bytes"] == size
    assert task["error"] is None  # the failures of the upload are over
    assert not part.exists()
    storage = moto.storage(tmp_path)
    assert storage.sha256(created["id"]) == task["video"]["sha256"]
    fetched = httpx.get(storage.presigned_url(created["id"]))
    assert hashlib.sha256(fetched.content).hexdigest() == task["video"]["sha256"]
    # The video was not downloaded again: at most the resume's range request past the end reached the host.
    assert stack.emulator.stats()["video_requests"] <= served_before["video_requests"] + 1
    assert SECRET not in stack.server.log()


def test_retention_removes_the_object(tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto) -> None:
    stack = s3_stack(
        tmp_path,
        redis_url,
        processes,
        moto,
        WANHOOK_SWEEP_INTERVAL_SECONDS="0.3",
        WANHOOK_VIDEO_RETENTION_SECONDS="1",
        WANHOOK_TASK_RETENTION_SECONDS="600",
    )
    task = stack.wait_status(stack.create("kept a little while")["id"], "ready")
    storage = moto.storage(tmp_path)
    assert storage.stored_size(task["id"]) == task["video"]["bytes"]

    gone = wait_for(
        lambda: (shown := stack.task(task["id"]))["video"] is None and shown, 20, what="the video to be removed"
    )
    assert gone["video_removed"]["reason"] == "retention"
    # The record goes first, then the object (in the same round, a moment later).
    wait_for(lambda: storage.stored_size(task["id"]) is None, 10, what="the object removed")
    wait_for(lambda: not stack.redis.zcard(keys.OBJECTS_TO_REMOVE), 10, what="nothing owed: removed at once")
    answer = stack.http.get(f"/v1/tasks/{task['id']}/video")
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "video_gone"


def test_an_upload_failing_for_good_shows_on_the_task_then_fails_it(
    tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto
) -> None:
    stack = s3_stack(tmp_path, redis_url, processes, moto, WANHOOK_S3_UPLOAD_RETRY_SECONDS="4")
    moto.stop()  # down for longer than uploads are tried again
    created = stack.create("a pier in the fog")
    part = stack.data_dir / "videos" / f"{created['id']}.mp4.part"

    # While it is tried again, the task says so: still downloading, the last failure and the attempts so far.
    failing = wait_for(
        lambda: (task := stack.task(created["id"]))["error"] and task, 60, what="the failing upload on the task"
    )
    assert failing["status"] == "downloading"
    assert failing["error"]["code"] == "UploadFailed"
    assert failing["error"]["attempts"] >= 1 and failing["error"]["failing_since"].endswith("Z")
    assert "object store" in failing["error"]["message"] and "uploading again until" in failing["error"]["message"]
    assert part.exists()

    # Then, WANHOOK_S3_UPLOAD_RETRY_SECONDS after the first failure, the task fails with it; the part file goes.
    failed = stack.wait_status(created["id"], "failed", "ready", timeout=60)
    assert failed["status"] == "failed", failed
    error = failed["error"]
    assert error["code"] == "UploadFailed" and "WANHOOK_S3_UPLOAD_RETRY_SECONDS" in error["message"]
    assert error["attempts"] >= 3 and error["failing_since"] == failing["error"]["failing_since"]
    assert not part.exists()
    metrics = stack.http.get("/metrics").text
    # Every failure but the last was tried again; the log told of them once (at most one line a minute).
    assert f"\nwanhook_upload_retries_total {float(error['attempts'] - 1)}\n" in metrics
    assert stack.server.log().count("uploading again") == 1
    assert SECRET not in stack.server.log()


def test_a_deletion_while_the_store_is_down_removes_the_object_once_it_is_back(
    tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto
) -> None:
    relay = Relay(tmp_path, moto)
    processes.append(relay.start())
    stack = s3_stack(
        tmp_path, redis_url, processes, moto, WANHOOK_S3_ENDPOINT=relay.endpoint, WANHOOK_SWEEP_INTERVAL_SECONDS="0.3"
    )
    task = stack.wait_status(stack.create("a lighthouse keeper's last night")["id"], "ready")
    storage = moto.storage(tmp_path)  # moto itself, not through the relay
    assert storage.stored_size(task["id"]) == task["video"]["bytes"]

    relay.stop()  # the store is unreachable; moto keeps the object
    answer = stack.http.delete(f"/v1/tasks/{task['id']}")
    assert answer.status_code == 200, answer.text
    removed = answer.json()["removed"]
    assert removed["task"] is True and removed["video"] is False and removed["video_pending"] is True
    assert stack.http.get(f"/v1/tasks/{task['id']}").status_code == 404
    assert storage.stored_size(task["id"]) == task["video"]["bytes"]  # still there: the store was down
    assert stack.redis.zscore(keys.OBJECTS_TO_REMOVE, task["id"]) is not None  # owed, durably

    # Rounds of the sweeper pass while the store is down: the removal stays owed.
    wait_for(lambda: "video removals from the object store are owed" in stack.server.log(), 30, what="a retry")
    assert stack.redis.zscore(keys.OBJECTS_TO_REMOVE, task["id"]) is not None

    relay.launch().wait_ready()  # the store is back
    wait_for(lambda: storage.stored_size(task["id"]) is None, 30, what="the object removed once the store is back")
    wait_for(lambda: stack.redis.zscore(keys.OBJECTS_TO_REMOVE, task["id"]) is None, 10, what="the removal settled")
    metrics = stack.http.get("/metrics").text
    assert '\nwanhook_object_removals_total{outcome="deferred"} 1.0\n' in metrics
    assert '\nwanhook_object_removals_total{outcome="late"} 1.0\n' in metrics
    # Deleting again is harmless.
    again = stack.http.delete(f"/v1/tasks/{task['id']}")
    assert again.status_code == 200 and again.json()["already_deleted"] is True


REQUEST_TIMEOUT = 2.0


def test_a_store_that_answers_nothing_holds_neither_deletions_nor_the_downloads_file_work(
    tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto
) -> None:
    relay = Relay(tmp_path, moto)
    processes.append(relay.start())
    stack = s3_stack(
        tmp_path,
        redis_url,
        processes,
        moto,
        WANHOOK_S3_ENDPOINT=relay.endpoint,
        WANHOOK_SWEEP_INTERVAL_SECONDS="0.3",
        WANHOOK_S3_REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT),
        WANHOOK_S3_UPLOAD_TIMEOUT_SECONDS="10",
        WANHOOK_DOWNLOAD_CONCURRENCY="8",
    )
    # More deletions than the store's pool has threads, and more hanging uploads than the default executor
    # had threads (six on two cores): before, the seventh deletion waited two timeouts, and the downloads'
    # disk-space checks queued behind the uploads.
    kept = [stack.create(f"kept {n}")["id"] for n in range(7)]
    ready = [stack.wait_status(task_id, "ready") for task_id in kept]
    storage = moto.storage(tmp_path)  # moto itself, not through the port that goes silent

    relay.stop()
    silent = Silent(tmp_path, relay.port)  # the store's address now accepts and says nothing
    processes.append(silent.start())
    hanging = [stack.create(f"while the store hangs {n}")["id"] for n in range(8)]

    took = []
    for task in ready:
        started = time.monotonic()
        answer = stack.http.delete(f"/v1/tasks/{task['id']}")
        took.append(time.monotonic() - started)
        assert answer.status_code == 200, answer.text
        removed = answer.json()["removed"]
        assert removed["task"] is True and removed["video_pending"] is True, removed
    # Within the request deadline (and a little for the answer itself), the seventh as the first.
    assert max(took) < REQUEST_TIMEOUT + 1.5, took
    for task in ready:
        assert stack.redis.zscore(keys.OBJECTS_TO_REMOVE, task["id"]) is not None  # owed, durably

    # The downloads' own file work went on meanwhile: every part file complete, only its upload waiting.
    def parts_complete() -> bool:
        for task_id in hanging:
            total = int(stack.redis.hget(keys.TASK + task_id, "dl_total") or 0)
            part = stack.data_dir / "videos" / f"{task_id}.mp4.part"
            if not total or not part.exists() or part.stat().st_size != total:
                return False
        return True

    wait_for(parts_complete, 20, what="every part file written while the store hangs")
    assert all(stack.task(task_id)["status"] == "downloading" for task_id in hanging)

    # The store answers again: the uploads complete and the owed removals are done.
    silent.stop()
    relay.launch().wait_ready()
    for task_id in hanging:
        stack.wait_status(task_id, "ready", timeout=60)
    wait_for(
        lambda: all(storage.stored_size(task["id"]) is None for task in ready), 30, what="the owed objects removed"
    )
    wait_for(lambda: not stack.redis.zcard(keys.OBJECTS_TO_REMOVE), 10, what="nothing owed any more")
    metrics = stack.http.get("/metrics").text
    assert f'\nwanhook_object_removals_total{{outcome="deferred"}} {float(len(ready))}\n' in metrics
    print(f"deletions with the store silent took {min(took):.2f}-{max(took):.2f} s (deadline {REQUEST_TIMEOUT:g} s)")


def test_the_video_is_served_from_where_the_task_records_it(
    tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto
) -> None:
    stack = s3_stack(tmp_path, redis_url, processes, moto)
    task = stack.wait_status(stack.create("a quay in the rain")["id"], "ready")
    assert stack.http.get(f"/v1/tasks/{task['id']}/video").status_code == 302  # in the store: redirected

    # A task whose record names a file on disk (stored before the installation moved to S3) is served from
    # the file, by this process whose own storage is the object store.
    local = stack.data_dir / "videos" / f"{task['id']}.mp4"
    local.write_bytes(b"stored on disk")
    stack.redis.hset(keys.TASK + task["id"], "video_dir", str(local.parent))
    answer = stack.http.get(f"/v1/tasks/{task['id']}/video")
    assert answer.status_code == 200 and answer.content == b"stored on disk"

    # One whose record names a bucket this process does not read: 503 naming the store, not a dead redirect.
    stack.redis.hset(keys.TASK + task["id"], "video_dir", "s3://another-bucket/videos")
    answer = stack.http.get(f"/v1/tasks/{task['id']}/video")
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "object_store_not_configured" and "s3://another-bucket/videos/" in error["message"]


def test_an_object_stored_after_its_task_failed_is_removed(
    tmp_path: Path, redis_url: str, processes: list[Process], moto: Moto
) -> None:
    """The orphan of tests/integration/test_download.py, in an object store: the object goes, and no removal stays
    owed."""
    stack = s3_stack(tmp_path, redis_url, processes, moto)
    task_id = fail_during_download(stack)
    assert head(moto.storage(tmp_path), task_id) is None
    assert stack.redis.zcard(keys.OBJECTS_TO_REMOVE) == 0
    assert not [p for p in (stack.data_dir / "videos").iterdir() if p.is_file()]
