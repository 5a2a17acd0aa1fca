"""The baseline: bare Starlette answering 200 to a POST after reading its body, on the same uvicorn.

python -m bench.bare_app PORT
"""

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wanhook.service.web import server


async def receive(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"outcome": "ok"})


app = Starlette(routes=[Route("/v1/events/dashscope", receive, methods=["POST"])])

if __name__ == "__main__":
    server.run(app, port=int(sys.argv[1]), log_level="warning", access_log=False)
