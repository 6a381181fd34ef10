"""What the views keep of a text: never a NUL, and bounded keys."""

from __future__ import annotations

from agentledger.projections.base import KEY_CHARS, view_key, without_nul


def test_nul_becomes_the_replacement_character() -> None:
    assert without_nul("a\x00b\x00") == "a\ufffdb\ufffd"
    text = "nothing to replace"
    assert without_nul(text) is text


def test_a_long_key_is_cut_with_a_marker_that_keeps_keys_apart() -> None:
    assert view_key("calculator") == "calculator"
    assert view_key("x" * KEY_CHARS) == "x" * KEY_CHARS
    long, longer = "y" * 20_000, "y" * 20_001
    key = view_key(long)
    assert len(key) <= KEY_CHARS and key.startswith("y" * 100)
    assert "[20000 chars, " in key
    assert view_key(longer) != key and view_key(long) == key  # deterministic
    assert "\x00" not in view_key("\x00" * 500)
