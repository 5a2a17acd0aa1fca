"""Keeping secrets out of logs and errors: URLs lose their userinfo and query string, keys their body."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``https://user:pass@host/path?Expires=..&Signature=..`` -> ``https://<redacted>@host/path?<redacted>``.

    The userinfo goes whole, the user name too: it is as often the secret itself (a token as the user,
    ``redis://:password@``) as a name.
    """
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"<redacted>@{host}" if at else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc, query="<redacted>" if parts.query else "", fragment=""))


def redact_secret(secret: str | None) -> str:
    if not secret:
        return "<unset>"
    return secret[:3] + "…" if len(secret) > 8 else "<redacted>"
