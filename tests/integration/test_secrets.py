"""Secrets hygiene (issue 2): a canary provider key and a canary prompt go through successes,
upstream failures and bad input; neither appears in any log line (stdout/stderr, where the
Powertools logger and EMF metrics write, and every Python logger) or any error body."""

from __future__ import annotations

import io
import json
import logging

import pytest
import requests

from llm_gateway.observability import logger as gateway_logger
from tests.integration.conftest import CANARY_KEY, openai_error, scripted, set_upstream

CANARY_PROMPT = "canary-prompt-5b7d1e0c-never-log-me"


@pytest.fixture
def all_logs(caplog):
    """Everything logged: the Powertools logger's own JSON output (its handler's stream is swapped
    for a buffer, at DEBUG), and every record of every Python logger at INFO, with all its fields
    and any exception text. ``capfd`` adds stdout/stderr (EMF metrics are printed there)."""
    caplog.set_level(logging.INFO)
    level = gateway_logger.log_level
    gateway_logger.setLevel("DEBUG")
    buffer = io.StringIO()
    old_stream = gateway_logger.registered_handler.setStream(buffer)
    formatter = logging.Formatter()

    def text() -> str:
        records = [
            json.dumps(vars(r), default=str) + (formatter.formatException(r.exc_info) if r.exc_info else "")
            for r in caplog.records
        ]
        return buffer.getvalue() + "\n".join(records)

    yield text
    gateway_logger.registered_handler.setStream(old_stream)
    gateway_logger.setLevel(level)


def test_neither_canary_appears_in_any_log_line_or_error_body(gateway, all_logs, capfd):
    assert gateway.services.keys.get("default") == CANARY_KEY  # the canary really is the key in use
    echo_key = openai_error(
        f"Incorrect API key provided: {CANARY_KEY}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )
    echo_both = openai_error(
        f"Invalid 'messages[0].content': '{CANARY_PROMPT}' (key {CANARY_KEY})", code="invalid_value"
    )
    prompt = [{"role": "user", "content": CANARY_PROMPT}]
    conv = gateway.post("/v1/conversations", {"system": f"system {CANARY_PROMPT}"}).json()["id"]
    request = {"model": "default", "messages": prompt}
    in_conv = {**request, "conversation_id": conv}

    bodies: list[tuple[int, str]] = []

    def send(body, upstream=None):
        if upstream is not None:
            set_upstream(gateway, upstream)
        r = gateway.post("/v1/chat/completions", body)
        bodies.append((r.status_code, r.text))
        return r

    assert send(request).status_code == 200
    assert send(in_conv).status_code == 200
    assert send(in_conv, scripted((401, {}, echo_key), (401, {}, echo_key))).status_code == 502
    r = send(in_conv, scripted((400, {}, echo_both)))
    assert r.status_code == 400 and "Invalid 'messages[0].content'" in r.json()["error"]["message"]
    assert send(request, scripted(*[(500, {}, echo_both)] * 3)).status_code == 502
    assert send(request, scripted(*[(429, {"Retry-After": "0"}, echo_both)] * 3)).status_code == 429
    assert send(request, scripted(*[(200, {}, f"not json {CANARY_KEY} {CANARY_PROMPT}")] * 3)).status_code == 502
    assert send(request, scripted(*[(0, {}, requests.ConnectionError(f"refused {CANARY_KEY}"))] * 3)).status_code == 503
    assert send(in_conv, scripted(*[(200, {}, {"choices": ["bogus"], "prompt": CANARY_PROMPT})] * 3)).status_code == 502
    # bad input carrying the prompt: the validation message names the field, not the value
    assert send({"model": "default", "messages": prompt, "temperature": CANARY_PROMPT}).status_code == 400
    assert send({"model": "default", "messages": [{"role": CANARY_PROMPT, "content": "x"}]}).status_code == 400
    assert (
        send(
            {
                "model": "default",
                "messages": [{"role": "user", "content": CANARY_PROMPT * 8000}],
                "conversation_id": conv,
            }
        ).status_code
        == 413
    )
    r = gateway.client.post(
        "/v1/chat/completions",
        content=f'{{"model": "{CANARY_PROMPT}'.encode(),
        headers={**gateway.headers(), "Content-Type": "application/json"},
    )
    bodies.append((r.status_code, r.text))
    assert r.status_code == 400
    # the stored conversation still has the prompt (that is its job), readable by its owner only
    assert CANARY_PROMPT in gateway.get(f"/v1/conversations/{conv}/items").text

    errors = [text for status, text in bodies if status >= 400]
    assert len(errors) == 11
    for text in errors:
        json.loads(text)  # every error body is JSON (OpenAI's shape is checked elsewhere)
        assert CANARY_KEY not in text and CANARY_PROMPT not in text, text[:300]
    out, err = capfd.readouterr()
    logs = all_logs()
    captured = out + err + logs
    assert '"correlation_id"' in logs and '"status":502' in logs  # the capture did see the request logs
    assert '"CloudWatchMetrics"' in out  # and the metrics
    assert CANARY_KEY not in captured
    assert CANARY_PROMPT not in captured
