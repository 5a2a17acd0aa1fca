"""wanhook's receiver without workers, for ``uvicorn --factory --workers N bench.wanhook_app:receiver``."""

from starlette.applications import Starlette

from service.app import create_app
from service.config import Settings


def receiver() -> Starlette:
    return create_app(Settings.from_env(), workers=False)
