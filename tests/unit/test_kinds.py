"""The image kinds in-process: what a stored task becomes on the wire (path, input, header), and the upload to
DashScope's temporary storage, against ``httpx.MockTransport``."""

from __future__ import annotations

import json

import httpx

from wanhook.service.domain.models import MODELS
from wanhook.service.domain.validation import check_task
from wanhook.service.flows.submission import dashscope_request
from wanhook.service.outbound.dashscope import CREATE_PATH, IMAGE2VIDEO_PATH, DashScopeClient

BASE = "https://dashscope.test/api/v1"
PNG_URL = "https://example.com/a.png"


def stored(doc: dict[str, object]) -> dict[str, str]:
    """A task as the store keeps it: strings, the parameters as JSON."""
    fields = check_task(doc)
    return {
        "model": fields["model"],
        "prompt": fields["prompt"],
        "negative_prompt": fields["negative_prompt"] or "",
        "parameters": json.dumps(fields["parameters"]),
    }


def test_each_kind_goes_to_its_path_with_its_fields_in_input() -> None:
    task = stored({"kind": "first-and-last-frame", "first_frame_url": PNG_URL, "last_frame_url": PNG_URL})
    task_input, parameters = dashscope_request(task)
    assert task_input == {"first_frame_url": PNG_URL, "last_frame_url": PNG_URL}  # no prompt: none was given
    assert parameters == {"resolution": "720P"}  # always sent: DashScope's default never decides
    assert MODELS[task["model"]].endpoint == IMAGE2VIDEO_PATH
    task = stored({"kind": "i2v", "model": "wan2.5-i2v-preview", "img_url": PNG_URL, "prompt": "p", "audio": False})
    assert dashscope_request(task) == ({"prompt": "p", "img_url": PNG_URL}, {"resolution": "1080P", "audio": False})
    assert MODELS[task["model"]].endpoint == CREATE_PATH
    assert dashscope_request(stored({"prompt": "p"}))[1] == {"size": "1920*1080"}  # text-to-video as before


async def test_an_oss_image_asks_dashscope_to_resolve_it() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"output": {"task_id": "t", "task_status": "PENDING"}})

    client = DashScopeClient("sk", BASE, transport=httpx.MockTransport(handler))
    await client.create_task("wan2.2-i2v-flash", {"img_url": PNG_URL}, {}, path=CREATE_PATH)
    await client.create_task("wan2.2-i2v-flash", {"img_url": "oss://dir/a.png"}, {}, path=CREATE_PATH)
    await client.create_task("wan2.1-kf2v-plus", {"first_frame_url": PNG_URL}, {}, path=IMAGE2VIDEO_PATH)
    await client.aclose()
    assert "x-dashscope-ossresourceresolve" not in seen[0].headers
    assert seen[1].headers["x-dashscope-ossresourceresolve"] == "enable"
    assert seen[2].url.path == "/api/v1/services/aigc/image2video/video-synthesis"


async def test_upload_gets_a_policy_then_posts_the_form_without_the_api_key() -> None:
    seen: list[httpx.Request] = []
    policy = {
        "upload_host": "https://bucket.test",
        "upload_dir": "dashscope-instant/abc",
        "policy": "cG9saWN5",
        "signature": "sig",
        "oss_access_key_id": "LTAI",
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "dashscope.test":
            return httpx.Response(200, json={"request_id": "r", "data": policy})
        return httpx.Response(200)

    client = DashScopeClient("sk-secret", BASE, transport=httpx.MockTransport(handler))
    url = await client.upload("wan2.2-i2v-flash", "cat.jpg", b"\xff\xd8jpeg", "image/jpeg")
    await client.aclose()
    assert url == "oss://dashscope-instant/abc/cat.jpg"
    assert seen[0].url.params["action"] == "getPolicy" and seen[0].url.params["model"] == "wan2.2-i2v-flash"
    assert seen[1].url.host == "bucket.test" and "authorization" not in seen[1].headers
    body = seen[1].content
    assert b'name="key"\r\n\r\ndashscope-instant/abc/cat.jpg' in body and b"\xff\xd8jpeg" in body
