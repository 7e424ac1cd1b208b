from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acechat.core import presets
from acechat.core.presets import (
    BUILTIN_PRESETS,
    DESCRIPTION_MAX,
    MAX_SUGGESTIONS,
    SUGGESTIONS,
    Preset,
    PresetError,
    resolve_preset_name,
    suggestions,
    validate_description,
    validate_preset_name,
    validate_prompt,
)
from acechat.core.settings import Settings, UpstreamSettings


def test_the_catalogue_is_broad_and_well_formed() -> None:
    assert len(BUILTIN_PRESETS) >= 8
    assert {"assistant", "coder", "reviewer", "writer", "translator", "summarizer"} <= BUILTIN_PRESETS.keys()
    for name, preset in BUILTIN_PRESETS.items():
        assert preset.name == name == validate_preset_name(name)
        assert preset.builtin
        assert 10 < len(preset.description) <= DESCRIPTION_MAX and "\n" not in preset.description
        assert "shared team chat" in preset.prompt
        assert "author's name" in preset.prompt
        assert "chat-sized" in preset.prompt
        assert 300 < len(preset.prompt) < 1500
    assert len({p.prompt for p in BUILTIN_PRESETS.values()}) == len(BUILTIN_PRESETS)


def test_a_builtin_prompt_is_its_role_then_the_shared_chat_guidance() -> None:
    # BUILTIN_PRESETS is built at import, before a mutant of _builtin can be switched on; call it here.
    preset = presets._builtin("pirate", "Talks like a pirate", "You are a pirate.")
    assert preset == Preset(
        "pirate",
        "Talks like a pirate",
        f"You are a pirate. {presets._TEAM_CHAT} {presets._CHAT_SIZED}",
        builtin=True,
    )
    assert BUILTIN_PRESETS["coder"].prompt.endswith(f" {presets._TEAM_CHAT} {presets._CHAT_SIZED}")


def test_the_default_preset_setting_names_a_builtin() -> None:
    assert Settings(upstream=UpstreamSettings(token="t")).default_preset in BUILTIN_PRESETS


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        ("coder", "coder"),
        ("  My-Bot2 ", "my-bot2"),
        ("qa", "qa"),
        ("a" * 32, "a" * 32),
        ("b-" * 16, "b-" * 16),
    ],
)
def test_valid_names_are_normalized(raw: str, slug: str) -> None:
    assert validate_preset_name(raw) == slug


CHARSET = "use lowercase letters, digits and hyphens, starting with a letter."


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "A preset needs a name."),
        (" \t ", "A preset needs a name."),
        ("a", "Preset names are 2 to 32 characters long; 'a' is 1."),
        ("x" * 33, f"Preset names are 2 to 32 characters long; '{'x' * 33}' is 33."),
        # Long names are shown cut to 40 characters.
        ("x" * 40, f"Preset names are 2 to 32 characters long; '{'x' * 40}' is 40."),
        ("Y" * 41, f"Preset names are 2 to 32 characters long; '{'y' * 40}…' is 41."),
        ("2fast", f"'2fast' is not a valid preset name: {CHARSET}"),
        ("-ab", f"'-ab' is not a valid preset name: {CHARSET}"),
        ("my bot", f"'my bot' is not a valid preset name: {CHARSET}"),
        ("café", f"'café' is not a valid preset name: {CHARSET}"),
        ("no_underscores", f"'no_underscores' is not a valid preset name: {CHARSET}"),
    ],
)
def test_invalid_names_say_why(raw: str, message: str) -> None:
    with pytest.raises(PresetError) as caught:
        validate_preset_name(raw)
    assert caught.value.user_message == str(caught.value) == message
    assert isinstance(caught.value, ValueError)


@given(st.text(max_size=40))
@settings(derandomize=True)
def test_any_name_is_refused_or_becomes_a_valid_slug(raw: str) -> None:
    try:
        slug = validate_preset_name(raw)
    except PresetError as error:
        assert error.user_message and "\n" not in error.user_message
        return
    assert re.fullmatch(r"[a-z][a-z0-9-]{1,31}", slug)
    assert validate_preset_name(slug) == slug


@given(st.from_regex(r"[a-z][a-z0-9-]{1,31}", fullmatch=True))
@settings(derandomize=True)
def test_every_valid_slug_is_accepted_as_is(slug: str) -> None:
    assert validate_preset_name(slug.upper()) == slug


def test_prompt_rules() -> None:
    assert validate_prompt("  Be terse.  \n", 100) == "Be terse."
    with pytest.raises(PresetError) as empty:
        validate_prompt(" \n ", 100)
    assert empty.value.user_message == "A preset's prompt cannot be empty."
    with pytest.raises(PresetError) as caught:
        validate_prompt("x" * 4213, 4000)
    assert caught.value.user_message == "The prompt is 4,213 characters long; the limit is 4,000."
    assert validate_prompt("x" * 4000, 4000) == "x" * 4000


def test_description_rules() -> None:
    assert validate_description(None) == ""
    assert validate_description("  Reviews\n  code  ") == "Reviews code"
    assert validate_description("d" * DESCRIPTION_MAX) == "d" * DESCRIPTION_MAX
    with pytest.raises(PresetError) as caught:
        validate_description(" ".join(["word"] * 250))
    assert caught.value.user_message == "The description is 1,249 characters long; the limit is 100."
    # Spacing is collapsed before the length is measured.
    assert validate_description(" d" * 50) == " ".join("d" * 50)
    with pytest.raises(PresetError):
        validate_description("d" * (DESCRIPTION_MAX + 1))


def test_resolution_takes_the_most_specific_setting() -> None:
    assert resolve_preset_name(["coder", "writer", "sql"], "assistant") == "coder"
    assert resolve_preset_name([None, "writer", "sql"], "assistant") == "writer"
    assert resolve_preset_name([None, None, "sql"], "assistant") == "sql"
    assert resolve_preset_name([None, "", None], "assistant") == "assistant"
    assert resolve_preset_name([], "tutor") == "tutor"


def test_a_builtin_preset_suggests_its_own_first_questions() -> None:
    assert suggestions(BUILTIN_PRESETS["coder"]) == SUGGESTIONS["coder"]
    assert [title for title, _ in suggestions(BUILTIN_PRESETS["writer"])] == [
        "Tighten a text",
        "Write an announcement",
    ]
    assert SUGGESTIONS.keys() <= BUILTIN_PRESETS.keys()
    assert all(0 < len(suggestions(p)) <= MAX_SUGGESTIONS for p in BUILTIN_PRESETS.values())


def test_a_preset_without_its_own_suggestions_gets_them_from_its_name_and_description() -> None:
    # A builtin without an entry, and a custom preset that shares a builtin's name, use the generic pair.
    for preset in (
        BUILTIN_PRESETS["sql"],
        Preset("coder", "Our house style for code", "Write Go.", builtin=False),
    ):
        assert suggestions(preset) == (
            ("What can you do?", f"What can you help me with as {preset.name}?"),
            ("Get started", f"{preset.description}: where do we start?"),
        )


def test_a_long_description_is_cut_to_200_characters_in_the_suggestion() -> None:
    custom = Preset("pirate", "a" * 200 + "bcd", "Arr.", builtin=False)
    assert suggestions(custom)[1] == ("Get started", "a" * 200 + ": where do we start?")
