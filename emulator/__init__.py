"""A local stand-in for DashScope's Wan text-to-video API, EventBridge's pushes and OSS's video URLs."""

from .config import EmulatorConfig
from .eventbridge import HttpTarget, RocketMQTarget, Target, build_event
from .server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "HttpTarget", "RocketMQTarget", "Target", "build_event"]
