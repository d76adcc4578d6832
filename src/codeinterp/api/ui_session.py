"""Who is looking at the trace viewer: a project, from an API key given once at login.

The login cookie holds no key: it is `<issued>.<HMAC of issued, keyed by the API key>`, so it
names its key's project only while that key is configured, for `MAX_AGE_SECONDS`, and showing it
to anyone grants the viewer's read-only pages, never the API. The API's own header
(`Authorization: Bearer KEY`) works on every page too. With no keys configured (a loopback-only
server) everyone is the default project and no login is asked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from fastapi import Request

from codeinterp.config import DEFAULT_PROJECT

from .deps import project_for

COOKIE = "codeinterp_ui"
_TOKEN_ISSUED = re.compile(r"[0-9]{1,12}")
_TOKEN_MAC = re.compile(r"[0-9a-f]{64}")
MAX_AGE_SECONDS = 12 * 3600


def token_for(key: str, issued: int | None = None) -> str:
    issued = int(time.time()) if issued is None else issued
    return f"{issued}.{_mac(key, issued)}"


def project_of_token(keys: dict[str, str], token: str, now: float | None = None) -> str | None:
    """The project of a login token still valid, or None."""
    issued_text, _, mac = token.partition(".")
    # A cookie is anyone's to forge: only the shape made here is looked at further.
    if not _TOKEN_ISSUED.fullmatch(issued_text) or not _TOKEN_MAC.fullmatch(mac):
        return None
    issued = int(issued_text)
    now = time.time() if now is None else now
    if not issued <= now + 60 or now - issued > MAX_AGE_SECONDS:  # a minute of clock skew
        return None
    for key, project in keys.items():
        if hmac.compare_digest(mac, _mac(key, issued)):
            return project
    return None


def viewer_project(request: Request) -> str | None:
    """The project whose traces the request may see; None if it must log in first.
    Unauthorized for a wrong key in an Authorization header."""
    keys: dict[str, str] = request.app.state.key_projects
    if not keys:
        return DEFAULT_PROJECT
    header = request.headers.get("authorization")
    if header:
        return project_for(keys, header)
    token = request.cookies.get(COOKIE)
    return project_of_token(keys, token) if token else None


def login(keys: dict[str, str], key: str) -> str:
    """The login token of an API key; Unauthorized if no project has that key."""
    project_for(keys, f"Bearer {key}")
    return token_for(key)


def _mac(key: str, issued: int) -> str:
    message = f"codeinterp trace viewer login {issued}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
