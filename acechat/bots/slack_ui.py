"""Slack's Block Kit for acechat: the buttons under an answer, and the forms (modals) it opens.

Ids are the core's `acechat:<feature>:<argument>` (action ids and view callback ids), so one listener
per kind routes every feature's presses and submissions, in any process and after a restart: a form
carries what its submission needs in its `private_metadata`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from acechat.core import interactions
from acechat.core.interactions import (
    ASK,
    NONE,
    OPEN,
    PRESET,
    STOP,
    VOTE,
    Controls,
    Home,
    PresetForm,
    control_id,
)
from acechat.core.presets import DESCRIPTION_MAX, NAME_MAX
from acechat.core.splitting import split_message

Block = dict[str, Any]

# Block Kit's limits: a section's text, an input's length, a modal's title, private metadata, a Home
# tab's blocks, a select's options.
SECTION_CHARS = 3000
MAX_INPUT_CHARS = 3000
MAX_TITLE_CHARS = 24
MAX_METADATA_CHARS = 3000
MAX_HOME_BLOCKS = 100
MAX_OPTIONS = 100
# Of the message "Ask acechat" is opened on, this much rides in the form's metadata to the model.
QUOTE_CHARS = 2000
# The message shortcut's callback id, as slack-manifest.yml declares it.
ASK_SHORTCUT = "ask_acechat"
NAME_FIELD = "name"
DESCRIPTION_FIELD = "description"
PROMPT_FIELD = "prompt"
QUESTION_FIELD = "question"
# The preset form's input blocks by the core's names for its fields. What concerns the whole form (the
# submitter's rights) shows on its first field.
# Why a form did not open, for the person who asked for it, by Slack's error (views.open). A trigger id
# opens one form, within 3 s of the press or command that brought it.
FORM_NOT_OPENED = {
    "expired_trigger_id": "That form took too long to open; run the command again.",
    "exchanged_trigger_id": "That form was opened already; run the command again for a new one.",
}


def form_not_opened(code: object) -> str:
    """What to tell someone whose form Slack would not open (`code`: views.open's error)."""
    return FORM_NOT_OPENED.get(str(code), f"The form could not open ({code}); try again.")


PRESET_BLOCKS = {
    interactions.NAME_FIELD: NAME_FIELD,
    interactions.DESCRIPTION_FIELD: DESCRIPTION_FIELD,
    interactions.PROMPT_FIELD: PROMPT_FIELD,
    interactions.WHOLE_FORM: NAME_FIELD,
}


def _plain(text: str) -> Block:
    return {"type": "plain_text", "text": text, "emoji": True}


def message_blocks(mrkdwn: str, controls: Controls) -> list[Block]:
    """A message's text as sections (Slack shows blocks, not `text`, once a message has them), then its
    buttons: Stop, or Slack's own 👍/👎 feedback buttons."""
    blocks: list[Block] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": piece}}
        for piece in split_message(mrkdwn, SECTION_CHARS)
        if piece.strip()
    ]
    return blocks + control_blocks(controls)


def control_blocks(controls: Controls) -> list[Block]:
    """The buttons under an answer: Stop, or Slack's own 👍/👎 feedback buttons (a streamed answer gets
    them from `chat.stopStream`, under the text it streamed)."""
    blocks: list[Block] = []
    if controls.stop is not None:
        button = {
            "type": "button",
            "action_id": control_id(STOP, controls.stop),
            "text": _plain("⏹ Stop"),
            "value": controls.stop,
        }
        blocks.append({"type": "actions", "elements": [button]})
    if controls.vote is not None:
        feedback = {
            "type": "feedback_buttons",
            "action_id": control_id(VOTE, controls.vote),
            "positive_button": {"text": _plain("👍"), "value": "up", "accessibility_label": "Good answer"},
            "negative_button": {"text": _plain("👎"), "value": "down", "accessibility_label": "Bad answer"},
        }
        blocks.append({"type": "context_actions", "elements": [feedback]})
    return blocks


def _input(
    block_id: str, label: str, *, initial: str, multiline: bool, max_length: int, optional: bool
) -> Block:
    element: Block = {
        "type": "plain_text_input",
        "action_id": block_id,
        "multiline": multiline,
        "max_length": max_length,
    }
    if initial:
        element["initial_value"] = initial[:max_length]
    return {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label),
        "element": element,
        "optional": optional,
    }


def _metadata(fields: Mapping[str, str | None]) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def preset_view(form: PresetForm, channel: str | None) -> Block:
    """The preset form: name, one-line description, and the prompt in a multi-line field."""
    limit = min(form.max_chars, MAX_INPUT_CHARS)
    return {
        "type": "modal",
        "callback_id": control_id(PRESET, form.feature),
        "title": _plain("Edit a preset" if form.editing else "Create a preset"),
        "submit": _plain("Save"),
        "close": _plain("Cancel"),
        "private_metadata": _metadata({"channel": channel}),
        "blocks": [
            _input(
                NAME_FIELD, "Name", initial=form.name, multiline=False, max_length=NAME_MAX, optional=False
            ),
            _input(
                DESCRIPTION_FIELD,
                "Description (one line)",
                initial=form.description,
                multiline=False,
                max_length=DESCRIPTION_MAX,
                optional=True,
            ),
            _input(
                PROMPT_FIELD,
                "Prompt: the instructions the AI follows",
                initial=form.prompt,
                multiline=True,
                max_length=limit,
                optional=False,
            ),
        ],
    }


def form_errors(problems: Mapping[str, str]) -> dict[str, str]:
    """The core's problems with a preset form (by field) as a `response_action: errors` acknowledgement
    names them: by input block, in plain text (Slack shows no mrkdwn there)."""
    errors: dict[str, str] = {}
    for field, problem in problems.items():
        block = PRESET_BLOCKS.get(field, NAME_FIELD)
        text = problem.replace("**", "").replace("`", "'")
        errors[block] = f"{errors[block]} {text}" if block in errors else text
    return errors


def ask_view(channel: str, message: Mapping[str, Any]) -> Block:
    """The "Ask acechat" form for a message: the question; the message's place and text ride along."""
    ts = str(message.get("ts", ""))
    thread = str(message.get("thread_ts") or ts)
    text = str(message.get("text") or "")
    quoted = text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + " …"
    metadata = _metadata({"channel": channel, "ts": ts, "thread_ts": thread, "text": quoted})
    while len(metadata) > MAX_METADATA_CHARS:  # JSON escapes can make the text longer than it is
        quoted = quoted[: len(quoted) * 3 // 4] + " …"
        metadata = _metadata({"channel": channel, "ts": ts, "thread_ts": thread, "text": quoted})
    return {
        "type": "modal",
        "callback_id": control_id(ASK, ""),
        "title": _plain("Ask acechat"),
        "submit": _plain("Ask"),
        "close": _plain("Cancel"),
        "private_metadata": metadata,
        "blocks": [
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "The answer goes in the message's thread."}],
            },
            _input(
                QUESTION_FIELD,
                "Your question about this message",
                initial="",
                multiline=True,
                max_length=MAX_INPUT_CHARS,
                optional=False,
            ),
        ],
    }


def submitted(view: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """A submitted form's values by field, and its metadata; anything malformed reads as empty."""
    values: dict[str, str] = {}
    state = view.get("state") or {}
    for block_id, actions in (state.get("values") or {}).items():
        if isinstance(actions, Mapping):
            value = (actions.get(block_id) or {}).get("value")
            if isinstance(value, str):
                values[str(block_id)] = value
    try:
        metadata = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        metadata = {}
    if not isinstance(metadata, dict):
        metadata = {}
    return values, {str(k): str(v) for k, v in metadata.items() if isinstance(v, str)}


def home_view(home: Home, render: Callable[[str], str]) -> Block:
    """The App Home tab: each of the core's sections (Markdown, rendered as mrkdwn), and for admins the
    buttons that open the preset forms."""
    blocks: list[Block] = [{"type": "header", "text": _plain("acechat")}]
    if home.admin:
        elements: list[Block] = [
            {"type": "button", "action_id": control_id(OPEN, "create"), "text": _plain("Create a preset")}
        ]
        if home.editable:
            elements.append(
                {
                    "type": "static_select",
                    "action_id": control_id(OPEN, "edit"),
                    "placeholder": _plain("Edit a preset…"),
                    "options": [
                        {"text": _plain(name), "value": name} for name in home.editable[:MAX_OPTIONS]
                    ],
                }
            )
        blocks.append({"type": "actions", "elements": elements})
    for section in home.sections:
        blocks.append({"type": "divider"})
        blocks.extend(message_blocks(render(section), NONE))
    if len(blocks) > MAX_HOME_BLOCKS:
        blocks = [
            *blocks[: MAX_HOME_BLOCKS - 1],
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "…"}]},
        ]
    return {"type": "home", "blocks": blocks}
