"""Prometheus metrics the core records; `acechat run` serves them at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUESTIONS = Counter(
    "acechat_questions", "Questions handled, by platform and outcome", ["platform", "outcome"]
)
UPSTREAM_SECONDS = Histogram(
    "acechat_upstream_seconds",
    "Time from sending a question upstream to the end of its answer",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
)
FIRST_TEXT_SECONDS = Histogram(
    "acechat_first_text_seconds",
    "Time from receiving a question to the first answer text shown on the platform",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
UPSTREAM_ERRORS = Counter("acechat_upstream_errors", "Failed upstream calls, by error code", ["code"])
IN_FLIGHT = Gauge("acechat_in_flight", "Questions being answered now")
ANSWERS_HELD = Counter(
    "acechat_answers_held",
    "Answers posted once complete instead of streamed, because the platform's edit allowance was spoken for",
)
RATE_LIMITED = Counter("acechat_rate_limited", "Questions refused by a rate limit, by limit", ["limit"])

# Labelled children, looked up once: `labels()` validates and locks on every call.
_questions: dict[tuple[str, str], Counter] = {}


def count_question(platform: str, outcome: str) -> None:
    child = _questions.get((platform, outcome))
    if child is None:
        child = _questions[platform, outcome] = QUESTIONS.labels(platform, outcome)
    child.inc()


# Per workspace (issue 17): questions that went upstream, what they cost, and refusals by reason.
WORKSPACE_QUESTIONS = Counter(
    "acechat_workspace_questions",
    "Questions that went upstream, by platform, workspace and outcome",
    ["platform", "workspace", "outcome"],
)
WORKSPACE_ANSWER_CHARS = Counter(
    "acechat_workspace_answer_chars",
    "Answer characters, by platform and workspace",
    ["platform", "workspace"],
)
WORKSPACE_TOKENS = Counter(
    "acechat_workspace_tokens",
    "Tokens the AI service reported, by platform and workspace",
    ["platform", "workspace"],
)
REFUSED = Counter("acechat_refused", "Questions refused by an admin's control, by reason", ["reason"])


def count_workspace(platform: str, workspace: str, outcome: str, chars: int, tokens: int | None) -> None:
    WORKSPACE_QUESTIONS.labels(platform, workspace, outcome).inc()
    WORKSPACE_ANSWER_CHARS.labels(platform, workspace).inc(chars)
    if tokens:
        WORKSPACE_TOKENS.labels(platform, workspace).inc(tokens)


def count_refusal(reason: str) -> None:
    REFUSED.labels(reason).inc()
