"""The baseline: bare Starlette answering 200 to a POST after reading its body, on the same uvicorn."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def receive(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"outcome": "ok"})


app = Starlette(routes=[Route("/v1/events/dashscope", receive, methods=["POST"])])
