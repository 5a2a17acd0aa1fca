"""wanhook's receiver without workers, on N uvicorn worker processes.

python -m bench.wanhook_app PORT WORKERS
"""

import sys

from starlette.applications import Starlette

from wanhook.service.config import Settings
from wanhook.service.web import server
from wanhook.service.web.app import create_app


def receiver() -> Starlette:
    return create_app(Settings.from_env(), workers=False)


if __name__ == "__main__":
    server.run(
        "bench.wanhook_app:receiver",
        factory=True,
        port=int(sys.argv[1]),
        workers=int(sys.argv[2]),
        log_level="warning",
        access_log=False,
    )
