"""JSON documents sent from outside, read within bounds: ``load``.

Every surface that parses JSON it was sent (the API's bodies, the webhook's pushes, RocketMQ's messages)
reads it here, so each inherits the same limits, and a new surface inherits them too:

- at most ``MAX_CONTAINERS`` objects and arrays and ``MAX_SEPARATORS`` commas, counted on the bytes before
  parsing (a count over-reads: a bracket or comma inside a string counts too). The parser's work is then
  bounded by the text's length: what makes ``json.loads`` slow is many small values, not long strings
  (12 MiB of ``[{},{},...]`` takes 190 ms on this machine, 27 MiB of base64 strings 36 ms);
- nested at most ``MAX_DEPTH`` deep (Python's own parser stops near 1,000 with a RecursionError, after
  the work), and at most ``MAX_MEMBERS`` keys and items in all, counted on the document;
- text that UTF-8, and so Redis, can hold: JSON may escape a lone surrogate (``\\ud800``).

The largest document wanhook takes, a create with two 10 MiB images as data URLs, has under 100 of each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_CONTAINERS", "MAX_DEPTH", "MAX_MEMBERS", "MAX_SEPARATORS", "load"]

MAX_CONTAINERS = 2_000
MAX_SEPARATORS = 100_000
MAX_DEPTH = 32
MAX_MEMBERS = 10_000

Refusal = Callable[[str, str], Exception]


def load(raw: bytes, refuse: Refusal) -> Any:
    """The document ``raw`` holds; ``refuse(code, message)`` is raised (code ``invalid_json``) when it is not
    JSON or breaks a bound above."""
    if raw.count(b"{") + raw.count(b"[") > MAX_CONTAINERS or raw.count(b",") > MAX_SEPARATORS:
        raise refuse(
            "invalid_json", f"the JSON has more than {MAX_CONTAINERS} objects and arrays or {MAX_SEPARATORS} commas"
        )
    try:
        # Decoded strictly first: json.loads would decode bytes with "surrogatepass", taking UTF-8's (or
        # UTF-16's) encoding of a lone surrogate as text. The encodings it detects are kept.
        text = raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError:
        raise refuse("invalid_json", "the body is not valid JSON (its text is not valid Unicode)") from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise refuse("invalid_json", "the body is not valid JSON") from None
    _check_shape(document, refuse)
    if "\\u" in text:  # only an escape can make a lone surrogate now: the check costs nothing otherwise
        try:
            json.dumps(document, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise refuse("invalid_json", "the body's text is not valid Unicode (a lone surrogate)") from None
    return document


def _check_shape(document: Any, refuse: Refusal) -> None:
    members = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise refuse("invalid_json", f"the JSON nests deeper than {MAX_DEPTH} levels")
        members += len(value)
        if members > MAX_MEMBERS:
            raise refuse("invalid_json", f"the JSON has more than {MAX_MEMBERS} keys and items")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
