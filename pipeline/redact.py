"""Passwords never written: a storage URL's password is kept out of every file and log line."""

from __future__ import annotations

import re
from typing import Any

PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z0-9+.-]+://[^/:@\s]+):(?P<password>[^@\s]*)@")


def without_password(url: str) -> tuple[str, str]:
    """(the URL without its password, the password or ""); libpq then reads PGPASSWORD or ~/.pgpass."""
    match = PASSWORD_IN_URL.search(url)
    if not match:
        return url, ""
    return url[:match.start()] + match["head"] + "@" + url[match.end():], match["password"]


def redacted(values: Any) -> Any:
    """A copy of a config dict (or any JSON-like value) with every URL password replaced by ***."""
    if isinstance(values, dict):
        return {k: redacted(v) for k, v in values.items()}
    if isinstance(values, list):
        return [redacted(v) for v in values]
    if isinstance(values, str):
        return PASSWORD_IN_URL.sub(lambda m: m["head"] + ":***@", values)
    return values
