"""Sealing secrets at rest with `cryptography`'s Fernet (AES-128-CBC with an HMAC-SHA256 tag).

The key comes from `ACECHAT_SECRET_KEY`: one Fernet key, or several separated by commas, the first
sealing and all of them opening (MultiFernet), so a new key can be put in front and the data resealed
(`acechat installs rekey`) before the old one is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEYGEN_HINT = "create one with `acechat installs keygen`"


class SecretKeyError(ValueError):
    """The secret key is missing or is not a Fernet key; the message names no key material."""


class SealedError(ValueError):
    """Sealed data that none of the keys opens (a missing key, or the data was altered)."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def parse_keys(raw: str) -> tuple[str, ...]:
    """The keys of an `ACECHAT_SECRET_KEY` value, first one first; SecretKeyError if any is not a key."""
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if not keys:
        raise SecretKeyError(f"ACECHAT_SECRET_KEY is empty: {KEYGEN_HINT}")
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            which = "it is" if len(keys) == 1 else f"key {position} of {len(keys)} is"
            raise SecretKeyError(
                f"ACECHAT_SECRET_KEY is invalid: {which} not a Fernet key (32 url-safe base64 bytes); {KEYGEN_HINT}"
            ) from None
    return keys


class SecretBox:
    """Seals with the first key, opens with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError(f"ACECHAT_SECRET_KEY is not set: {KEYGEN_HINT}")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def open(self, sealed: str, *, ttl: int | None = None) -> str:
        """The plain text; SealedError if no key opens it or (with `ttl`) it is older than `ttl` seconds."""
        try:
            if ttl is None:
                return self._fernet.decrypt(sealed.encode("ascii")).decode()
            return self._fernet.decrypt(sealed.encode("ascii"), ttl=ttl).decode()
        except (InvalidToken, UnicodeError) as error:
            raise SealedError("sealed data that none of the keys opens") from error

    def reseal(self, sealed: str) -> str:
        """The same plain text sealed with the first key (keeping its original timestamp)."""
        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as error:
            raise SealedError("sealed data that none of the keys opens") from error
