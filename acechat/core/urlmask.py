"""Passwords in database URLs, kept out of everything a person reads.

A libpq URL can carry a password twice: in its user info (`postgresql://user:PASSWORD@host/db`) and as a
parameter (`?password=PASSWORD`, `sslpassword=` for a client key). Both are masked whatever their length;
text that merely mentions such a URL (a driver's error, a log line) is masked the same way.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MASK = "***"
# libpq's connection parameters that hold a secret.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})

# The user info and host of a URL, after its `://`: up to the path, query, fragment, end of the word or
# the next URL's `://`.
_AUTHORITY = re.compile(r"(?:[^/?#\s'\"<>:]|:(?!//))*")
# `password=…` as a URL parameter or a libpq `key=value` setting, in any text.
_PARAMETER = re.compile(r"(?i)\b((?:ssl)?password=)[^&\s'\"#]*")


def url_passwords(url: str) -> list[str]:
    """Every password in `url`, as written and as sent (percent-decoded)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
    except ValueError:
        return []
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key).lower() in SECRET_PARAMETERS:
            found.append(value)
    return [secret for raw in found for secret in {raw, unquote(raw)} if secret]


def mask_url(url: str) -> str:
    """`url` with every password in it replaced by `***`; the rest as written."""
    return mask_urls_in(url)


def mask_urls_in(text: str) -> str:
    """`text` with the password of every URL in it, and every `password=` setting, masked.

    Linear in the text: each `://` reads only the user info after it, which ends before the next one."""
    out: list[str] = []
    at = 0
    while (found := text.find("://", at)) != -1:
        start = found + 3
        authority = _AUTHORITY.match(text, start)
        end = authority.end() if authority is not None else start
        userinfo_end = text.rfind("@", start, end)
        colon = text.find(":", start, userinfo_end) if userinfo_end != -1 else -1
        if colon != -1:
            out.append(text[at : colon + 1] + MASK)
            at = userinfo_end
        else:
            out.append(text[at:end])
            at = end
    out.append(text[at:])
    return _PARAMETER.sub(lambda m: m.group(1) + MASK, "".join(out))
