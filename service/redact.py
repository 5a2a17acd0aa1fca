"""Keeping secrets out of logs and errors: signed URLs lose their query string, keys their body."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``https://host/path?Expires=..&Signature=..`` -> ``https://host/path?<redacted>``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="<redacted>" if parts.query else "", fragment=""))


def redact_secret(secret: str | None) -> str:
    if not secret:
        return "<unset>"
    return secret[:3] + "…" if len(secret) > 8 else "<redacted>"
