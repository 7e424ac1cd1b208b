"""slack-manifest.yml asks for exactly the scopes the code needs: every Slack Web API method the product
calls is read from its source, and each method's scope comes from its page on docs.slack.dev."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import yaml
from slack_sdk.web.async_client import AsyncWebClient

ROOT = Path(__file__).resolve().parents[1]

# Method → (token, scopes), as each method's page on docs.slack.dev lists under Facts → Scopes. Where a
# method needs one scope per kind of conversation, the bot needs them all: it answers in every kind.
# No scope: the method needs none (auth.test). An app-level token's scopes are not in the manifest.
HISTORY = ("channels:history", "groups:history", "im:history", "mpim:history")
METHOD_SCOPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chat.postMessage": ("bot", ("chat:write",)),
    "chat.update": ("bot", ("chat:write",)),
    "chat.postEphemeral": ("bot", ("chat:write",)),
    # Accepts chat:write (and, for now, assistant:write: docs.slack.dev changelog 2026-03-05).
    "assistant.threads.setStatus": ("bot", ("chat:write",)),
    "reactions.add": ("bot", ("reactions:write",)),
    "users.info": ("bot", ("users:read",)),
    "conversations.history": ("bot", HISTORY),
    # Its page adds that a bot token reads threads of direct messages only: in channels it needs a user
    # token. The scopes are the same.
    "conversations.replies": ("bot", HISTORY),
    # Asked only of channels (a channel's creator), public and private: not of direct messages, whose
    # im:read and mpim:read the bot therefore does not need.
    "conversations.info": ("bot", ("channels:read", "groups:read")),
    "usergroups.list": ("bot", ("usergroups:read",)),
    "usergroups.users.list": ("bot", ("usergroups:read",)),
    "auth.test": ("bot", ()),
    "apps.connections.open": ("app", ("connections:write",)),
    # Buttons, forms (issues 16, 18), the Home tab and agent sessions (issue 18). No scope of its own:
    # any token opens a form for a trigger it was given.
    "views.open": ("bot", ()),
    "views.publish": ("bot", ()),
    "agents.sessions.setStatus": ("bot", ("chat:write",)),
    # Answers streamed in agent sessions (issue 18, item 5).
    "chat.startStream": ("bot", ("chat:write",)),
    "chat.appendStream": ("bot", ("chat:write",)),
    "chat.stopStream": ("bot", ("chat:write",)),
    "assistant.threads.setSuggestedPrompts": ("bot", ("assistant:write",)),
}
# What else a bot scope is for: the events the manifest subscribes to, and the slash command.
EVENT_SCOPES: dict[str, tuple[str, ...]] = {
    "app_mention": ("app_mentions:read",),
    "message.im": ("im:history",),
    "message.channels": ("channels:history",),
    "message.groups": ("groups:history",),
    "user_change": ("users:read",),
    "app_uninstalled": (),
    "tokens_revoked": (),
    "app_home_opened": (),
    "agent_session_stopped": (),
}
COMMAND_SCOPE = "commands"

_API_CALL = re.compile(r'api_call\(\s*"([A-Za-z.]+)"')


def client_methods() -> dict[str, str]:
    """slack_sdk's client method name → the Web API method it calls."""
    methods: dict[str, str] = {}
    for name, function in inspect.getmembers(AsyncWebClient, inspect.isfunction):
        found = _API_CALL.findall(inspect.getsource(function)) if not name.startswith("_") else []
        if len(found) == 1:
            methods[name] = found[0]
    return methods


def called_methods() -> dict[str, set[str]]:
    """Every Web API method product code calls, by the files calling it: client methods by name
    (`client.chat_postMessage(...)`) and `api_call("method")` by its argument."""
    known = client_methods()
    calls: dict[str, set[str]] = {}
    for path in sorted((ROOT / "acechat").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            method = known.get(node.func.attr)
            if node.func.attr == "api_call" and node.args and isinstance(node.args[0], ast.Constant):
                method = str(node.args[0].value)
            if method is not None:
                calls.setdefault(method, set()).add(str(path.relative_to(ROOT)))
    return calls


def manifest() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "slack-manifest.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def bot_scopes() -> set[str]:
    oauth = manifest()["oauth_config"]
    assert isinstance(oauth, dict)
    return set(oauth["scopes"]["bot"])


def test_the_source_scan_sees_what_the_adapter_calls() -> None:
    calls = called_methods()
    assert "acechat/bots/slack_targets.py" in calls["reactions.add"]
    assert "acechat/bots/slack_stream.py" in calls["chat.appendStream"]
    assert {"chat.postMessage", "chat.update", "users.info", "auth.test"} <= set(calls)


def test_every_method_the_code_calls_has_its_scope_on_record() -> None:
    unknown = {m: files for m, files in called_methods().items() if m not in METHOD_SCOPES}
    assert not unknown, f"add these methods' scopes (from docs.slack.dev) to METHOD_SCOPES: {unknown}"


def test_the_manifest_asks_for_every_scope_the_code_needs_and_no_other() -> None:
    settings = manifest()["settings"]
    assert isinstance(settings, dict)
    events = settings["event_subscriptions"]["bot_events"]
    needed = {
        scope
        for method in called_methods()
        for token, scopes in [METHOD_SCOPES[method]]
        if token == "bot"
        for scope in scopes
    }
    needed |= {scope for event in events for scope in EVENT_SCOPES[event]}
    needed.add(COMMAND_SCOPE)
    assert bot_scopes() == needed
    assert "reactions:write" in bot_scopes()  # the ⏳ on a refused question


def test_the_manifest_declares_the_app_an_agent_with_what_that_needs() -> None:
    """docs.slack.dev "Agent sessions": only apps declared agents (`features.agent_view`) create
    sessions, and declaring one adds assistant:write; "agent_session_stopped": without the event
    Slack shows no Stop on a processing session."""
    features = manifest()["features"]
    assert isinstance(features, dict)
    assert features["agent_view"]["agent_description"]
    assert "assistant_view" not in features
    settings = manifest()["settings"]
    assert isinstance(settings, dict)
    assert {"agent_session_stopped", "app_home_opened"} <= set(settings["event_subscriptions"]["bot_events"])
    assert "assistant:write" in bot_scopes()
