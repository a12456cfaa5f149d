"""LOG_PROMPTS (issue 13 item 9): off by default (tests/integration/test_secrets.py: no prompt in any
log line, even at DEBUG); on, each request's prompt is logged at DEBUG with secrets redacted."""

from __future__ import annotations

from llm_gateway.observability import logger as gateway_logger
from tests.integration.conftest import regateway
from tests.integration.test_secrets import all_logs  # noqa: F401 - the fixture

PROMPT = "log-prompts-canary-3f9e"
USER_SECRET = "sk-proj-usersPastedKey1234567890"


def test_log_prompts_logs_the_prompt_at_debug_with_secrets_redacted(gateway, all_logs):  # noqa: F811
    gw = regateway(gateway, log_prompts=True)
    body = {
        "model": "default",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"{PROMPT} my key is {USER_SECRET}, Authorization: Bearer abc.def"},
        ],
    }
    assert gw.post("/v1/chat/completions", body).status_code == 200
    logs = all_logs()
    assert PROMPT in logs and "be brief" in logs
    assert USER_SECRET not in logs and "abc.def" not in logs
    assert "[redacted]" in logs


def test_log_prompts_logs_nothing_above_debug(gateway, all_logs):  # noqa: F811
    gw = regateway(gateway, log_prompts=True)
    gateway_logger.setLevel("INFO")  # the fixture restores the level it found
    assert (
        gw.post(
            "/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": PROMPT}]}
        ).status_code
        == 200
    )
    assert PROMPT not in all_logs()


def test_prompts_are_not_logged_by_default(gateway, all_logs):  # noqa: F811
    assert gateway.services.settings.log_prompts is False
    r = gateway.post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": PROMPT}]})
    assert r.status_code == 200
    assert PROMPT not in all_logs()  # the fixture logs at DEBUG: nothing of the prompt anyway
