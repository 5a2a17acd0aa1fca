"""The ingress: how a completion event gets in.

An event arrives as raw bytes, by EventBridge's HTTP push (``webhook``, checked by ``signature``) or
from RocketMQ (``wanhook.consumers``); ``events`` parses it into a ``CompletionEvent`` and
``receiver`` records it in Redis, once.
"""
