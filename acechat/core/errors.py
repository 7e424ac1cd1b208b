"""The one error type the upstream client raises, and what each failure tells a chat user."""

from __future__ import annotations


class UpstreamError(Exception):
    """Any failed call to the AI Chat API.

    `user_message` is short and safe to show in a channel (never a token, URL or traceback);
    `detail` is for the operator's log. `status` is None when no HTTP reply arrived (connection
    refused, timeout). `retryable` says whether a retry could help.
    """

    def __init__(
        self,
        user_message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        trace_id: str | None = None,
        detail: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
        partial: bool = False,
    ) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.status = status
        self.code = code
        self.trace_id = trace_id
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after
        # True when some answer text had already arrived: such a turn is never retried.
        self.partial = partial

    def __str__(self) -> str:
        parts = [self.user_message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.trace_id:
            parts.append(f"trace_id={self.trace_id}")
        if self.detail:
            parts.append(f"detail={self.detail}")
        return " ".join(parts)
