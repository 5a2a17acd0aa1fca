"""A local stand-in for DashScope's Wan text-to-video API, EventBridge's pushes and OSS's video URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import EmulatorConfig
from .eventbridge import HttpTarget, RocketMQTarget, Target, build_event

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "HttpTarget", "RocketMQTarget", "Target", "build_event"]


def __getattr__(name: str) -> Any:
    # The server renders videos with PyAV (the `emulator` extra); importing the package for its
    # command line must work without it.
    if name == "Emulator":
        from .server import Emulator

        return Emulator
    raise AttributeError(name)
