"""Talking about remote servers (the LLM's, OpenAI Images'): URLs shown without credentials,
waits and tries in words, a server's Retry-After. Shared by `studio.llm.openai_compat` and
`studio.images.backends.openai_images`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"

# `scheme://user:password@`: the user info, up to the last "@" before the path.
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")


def redact_url(url: str) -> str:
    """`url` without the `user:password@` of its netloc; other URLs (and non-URLs) unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub("", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def mask_password(url: str) -> str:
    """`url` with its password shown as ***, to print or log."""
    url = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:)[^@/?#]+@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def redact_text(text: str) -> str:
    return _USERINFO.sub("", text)


def seconds_text(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


def tries_text(count: int) -> str:
    return f"{count} {'try' if count == 1 else 'tries'}"


def retry_after(exc: Any) -> float | None:
    try:
        return max(0.0, float(exc.response.headers.get("retry-after", "")))
    except (AttributeError, TypeError, ValueError):
        return None


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 in brackets or not) is this machine's
    loopback; a host name other than localhost may resolve to anything, so it is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
