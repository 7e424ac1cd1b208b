"""What a `ReplyTarget` raises when a platform call fails; the core words each one for the user."""

from __future__ import annotations


class PlatformError(Exception):
    """A platform call failed for a reason the core words for the user (targets raise subclasses)."""


class PlatformRateLimited(PlatformError):
    """The platform refused a call for being too frequent; it may be made again after `retry_after`."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.2f}s")
        self.retry_after = retry_after


class PlatformUnsure(PlatformError):
    """A call whose outcome is unknown (it timed out, or the connection broke once it was sent), which
    the target could not settle: a post was not found on the platform, an edit may not show."""


class PlatformForbidden(PlatformError):
    """The bot lacks the rights to post here (permissions, not in the channel, archived)."""


class MessageGone(PlatformError):
    """The message to edit no longer exists (someone deleted it)."""
