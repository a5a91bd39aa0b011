"""The Redactor on its own, and its settings: keys at any depth, patterns in strings, nothing
touched when off, and bad patterns refused at start naming the setting."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.redact import REDACTED, Redactor, split_keys

CARD = r"\b\d{4}(?:[ -]?\d{4}){3}\b"
KEYS = ("password", "*_token", "*secret*")


def test_matching_keys_are_redacted_at_any_depth_in_any_case() -> None:
    redactor = Redactor(KEYS)
    arguments = [
        7,
        {"user": {"Password": "hunter2", "name": "ann"}},
        [{"list": [{"API_TOKEN": {"nested": "x"}, "token": "kept"}]}],
        {"my_Secret_key": ["a", "b"], "secretive": 1},
    ]
    text, changed = redactor.arguments(orjson.dumps(arguments).decode())
    assert changed
    assert text is not None
    assert orjson.loads(text) == [
        7,
        {"user": {"Password": REDACTED, "name": "ann"}},
        [{"list": [{"API_TOKEN": REDACTED, "token": "kept"}]}],
        {"my_Secret_key": REDACTED, "secretive": REDACTED},
    ]


def test_patterns_replace_matches_inside_strings_and_text() -> None:
    redactor = Redactor(patterns=[CARD])
    text, changed = redactor.arguments('[{"note": "card 4111 1111 1111 1111 ok"}, 4111]')
    assert changed
    assert text == '[{"note":"card [REDACTED] ok"},4111]'
    assert redactor.text("paid 4111-1111-1111-1111 twice") == "paid [REDACTED] twice"
    assert redactor.lines(["a 4111111111111111", "b"]) == (["a [REDACTED]", "b"], True)


def test_nothing_matched_keeps_the_text_byte_for_byte() -> None:
    redactor = Redactor(KEYS, [CARD])
    text = '[1, {"name": "ann",  "n": 1.50}]'  # spacing and number form orjson would rewrite
    assert redactor.arguments(text) == (text, False)


def test_off_touches_nothing_and_parses_nothing() -> None:
    redactor = Redactor(split_keys(""), [])
    assert not redactor.active
    not_json = "[not json"  # a parse would fall back to patterns; off, it is simply returned
    assert redactor.arguments(not_json) == (not_json, False)
    assert redactor.text("password 4111 1111 1111 1111") == "password 4111 1111 1111 1111"


def test_truncated_text_that_is_no_json_still_gets_the_patterns() -> None:
    redactor = Redactor(KEYS, [CARD])
    assert redactor.arguments('["4111 1111 1111 1111", "cu') == ('["[REDACTED]", "cu', True)


@pytest.mark.parametrize(
    ("depth", "stored"),
    [
        (200, "[" * 200 + '{"password":"[REDACTED]"}' + "]" * 200),
        # Past what orjson writes (255 levels), up to what it reads (1,024): wholly redacted.
        (1000, '"[REDACTED]"'),
    ],
)
def test_deep_nesting_is_redacted_without_recursion(depth: int, stored: str) -> None:
    deep = "[" * depth + '{"password":"hunter2"}' + "]" * depth
    assert Redactor(KEYS).arguments(deep) == (stored, True)


def test_keys_setting_is_comma_separated() -> None:
    assert split_keys(" password, *_token ,,*secret*, ") == KEYS


def test_patterns_come_from_a_json_array_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As .env.example documents it: JSON escapes each backslash of the regex.
    monkeypatch.setenv("SUPERVISOR_REDACT_PATTERNS", '["\\\\b\\\\d{4}(?:[ -]?\\\\d{4}){3}\\\\b"]')
    monkeypatch.setenv("SUPERVISOR_REDACT_KEYS", "password,*_token")
    settings = Settings(_env_file=None)
    assert settings.REDACT_PATTERNS == [CARD]
    assert split_keys(settings.REDACT_KEYS) == ("password", "*_token")
    monkeypatch.setenv("SUPERVISOR_REDACT_PATTERNS", "")
    assert Settings(_env_file=None).REDACT_PATTERNS == []


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('["ok", "(unclosed"]', "SUPERVISOR_REDACT_PATTERNS: '(unclosed' is not a valid regular"),
        ('["x*"]', "SUPERVISOR_REDACT_PATTERNS: 'x*' matches the empty string"),
        (r"\d{16}", "must be a JSON array of regular expressions"),
        ('{"a": 1}', "must be a JSON array of regular expressions"),
    ],
)
def test_bad_patterns_stop_the_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, words: str
) -> None:
    monkeypatch.setenv("SUPERVISOR_REDACT_PATTERNS", value)
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace("*", r"\*")):
        Settings(_env_file=None)
