"""Error text passed on from an upstream carries no form of the key and no quote of the prompt."""

from __future__ import annotations

import base64

import pytest

from llm_gateway.redaction import scrub, secret_forms, without_echoes

KEY = "sk-canary-PROVIDERKEY-7f3a9c41d2"
BARE = KEY.removeprefix("sk-")
PROMPT = "Please summarise the quarterly figures for project NIGHTINGALE and its budget of 4.2 million."


@pytest.mark.parametrize(
    "form",
    [
        KEY,
        BARE,
        KEY[::-1],
        BARE[::-1],
        base64.b64encode(KEY.encode()).decode(),
        base64.b64encode(BARE.encode()).decode(),
        base64.b64encode(f"Bearer {KEY}".encode()).decode(),  # the key inside a longer base64 text
        base64.b64encode(f"user:{KEY}".encode()).decode(),
        base64.urlsafe_b64encode(f"x{KEY}".encode()).decode(),
        KEY.encode().hex(),
        KEY.encode().hex().upper(),
        KEY[:16],  # a prefix of the key
        BARE[4:20],
    ],
    ids=lambda f: f[:12],
)
def test_no_form_of_the_key_survives_scrub(form):
    text = scrub(f"Invalid key '{form}' for this org.", KEY)
    for probe in secret_forms(KEY):
        for i in range(0, max(1, len(probe) - 11), 4):
            assert probe[i : i + 12].lower() not in text.lower(), (probe, text)
    assert text.startswith("Invalid key '") and text.endswith("' for this org.")


def test_scrub_keeps_ordinary_text_and_bounds_it():
    assert scrub("Rate limit reached for requests.", KEY) == "Rate limit reached for requests."
    assert len(scrub("x" * 10_000, KEY)) == 500


@pytest.mark.parametrize(
    "quote",
    [PROMPT, PROMPT[:40], PROMPT[25:70], PROMPT[-30:]],
    ids=["whole", "head", "middle", "tail"],
)
def test_quotes_of_the_prompt_are_cut_out_whole_or_in_part(quote):
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]}
    text = without_echoes(f"Content rejected: '{quote}' violates policy.", body)
    assert text.startswith("Content rejected: '") and text.endswith("' violates policy.")
    for i in range(0, len(PROMPT) - 16):
        assert PROMPT[i : i + 17] not in text, text


def test_without_echoes_leaves_unrelated_text_alone():
    body = {"messages": [{"role": "user", "content": PROMPT}]}
    message = "This model's maximum context length is 8192 tokens."
    assert without_echoes(message, body) == message


def test_echo_redaction_is_fast_on_a_large_prompt():
    """Windows of the (short) message are looked up in the prompt: linear, not quadratic (no clock:
    a 1 MB prompt and a 500-character message must simply finish here)."""
    big = ("lorem ipsum " * 90_000) + PROMPT
    body = {"messages": [{"role": "user", "content": big}]}
    assert "NIGHTINGALE" not in without_echoes(f"bad input: {PROMPT[10:60]} " + "z" * 400, body)
