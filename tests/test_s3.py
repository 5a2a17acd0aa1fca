"""Videos in an S3-compatible object store, end to end against moto's S3 server (a real process, from PyPI):
upload (single and multipart) checked by size and sha256, the presigned redirect, streaming with Range,
an upload failed and retried, a restart between download and upload, deletion removing the object."""

from __future__ import annotations

import datetime
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from wanhook.service.config import Settings
from wanhook.service.objectstore import MULTIPART_THRESHOLD, S3Config, S3Storage, Signer

from .conftest import Stack
from .support import Process, free_port, http_ready, wait_for

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
        assert storage.publish("t-big", part) == f"s3://{BUCKET}/wan/videos/t-big.mp4"
    assert not list((tmp_path / "parts").iterdir())  # uploaded and checked: the local copy is gone
    assert storage.stored_size("t-big") == len(data)
    assert storage.sha256("t-big") == hashlib.sha256(data).hexdigest()

    fetched = httpx.get(storage.presigned_url("t-big"))
    assert fetched.status_code == 200 and fetched.content == data

    assert storage.remove("t-big") is True
    assert storage.stored_size("t-big") is None
    assert storage.remove("t-big") is False  # twice is harmless


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
    assert storage.stored_size(task["id"]) is None
    answer = stack.http.get(f"/v1/tasks/{task['id']}/video")
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "video_gone"
