"""The app in this process, driven through httpx's ASGITransport on the test's event loop, with its lifespan run
around it and the session's real Redis (tests/conftest.py's ``redis_server``, emptied before each test). No worker
loops run: a test moves a task itself, through the store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from wanhook.service.config import Settings
from wanhook.service.outbound.dashscope import DashScopeClient
from wanhook.service.runtime import Runtime
from wanhook.service.web.app import create_app

TOKEN = "eb-token-for-tests"
Handler = Callable[[httpx.Request], httpx.Response]


class Api:
    """A started app, a client of it, and a way to answer its DashScope calls."""

    def __init__(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        self.client = client
        self.runtime = runtime

    def answer_dashscope(self, handler: Handler) -> None:
        """DashScope's answers, from ``handler``: the runtime's client is replaced by one on a MockTransport."""
        settings = self.runtime.settings
        self.runtime.dashscope = DashScopeClient(
            settings.api_key, settings.dashscope_base_url, transport=httpx.MockTransport(handler)
        )


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(redis_url: str, tmp_path: Path) -> AsyncIterator[MakeApi]:
    """``await make_api(runtime=None, **env)``: the app with the settings of ``env`` (environment variables),
    its lifespan started; or on a ``runtime`` made by the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(runtime: Runtime | None = None, **env: str) -> Api:
            settings = Settings.from_env(
                {
                    "WANHOOK_REDIS_URL": redis_url,
                    "DASHSCOPE_API_KEY": "sk-test",
                    "WANHOOK_DATA_DIR": str(tmp_path),
                    "DASHSCOPE_HTTP_BASE_URL": "https://dashscope.test/api/v1",
                    "WANHOOK_EVENTBRIDGE_TOKEN": TOKEN,
                    **env,
                }
            )
            app = create_app(settings, workers=False, runtime=runtime)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wanhook.test")
            )
            return Api(client, app.state.runtime)

        yield make


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()
