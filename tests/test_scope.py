"""Scope keys are stored in the database, so their shape must never change."""

from __future__ import annotations

import pickle

from acechat.core.scope import Scope


def test_keys_keep_their_stored_shape() -> None:
    assert Scope.of("slack", "T1", "C1").key == "slack:T1:C1:-"
    assert Scope.of("slack", "T1", "C1", "171.5").key == "slack:T1:C1:171.5"
    assert Scope.of("discord", None, "D9").key == "discord:@dm:D9:-"
    assert Scope.of("slack", "T1", "C1", "").key == "slack:T1:C1:-"


def test_the_key_is_not_part_of_equality_repr_or_construction() -> None:
    a, b = Scope("slack", "T1", "C1"), Scope.of("slack", "T1", "C1")
    assert a == b and hash(a) == hash(b)
    assert "key" not in repr(a)
    assert pickle.loads(pickle.dumps(a)).key == a.key


def test_lineage_and_channel_scope() -> None:
    thread = Scope.of("slack", "T1", "C1", "171.5")
    channel = thread.channel_scope
    assert channel == Scope.of("slack", "T1", "C1")
    assert channel.channel_scope is channel
    assert thread.lineage() == ("slack:T1:C1:171.5", "slack:T1:C1:-", "slack:T1")
    assert channel.lineage() == ("slack:T1:C1:-", "slack:T1")
