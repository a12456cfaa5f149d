"""bin/llm-gateway chat in a pseudo-terminal against the local stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pexpect
import pytest

from tests.e2e.conftest import ROOT

PROMPT = "you> "


def chat_env(stack) -> dict[str, str]:
    """An operator's shell beside a running `make dev`: no OpenAI variables, only the state file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AWS_"))}
    # a dumb terminal: plain text to match (no colours, no cursor moves); no cursor-position requests
    return {**env, "LOCAL_STACK_STATE": str(stack.state), "TERM": "dumb", "PROMPT_TOOLKIT_NO_CPR": "1"}


def spawn(stack, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        str(ROOT / "bin/llm-gateway"),
        ["chat", *args],
        cwd=str(ROOT),
        env=chat_env(stack),
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 200),
    )
    child.logfile_read = sys.stdout if os.environ.get("CHAT_TEST_ECHO") else None
    return child


def say(child: pexpect.spawn, text: str) -> None:
    child.expect_exact(PROMPT)
    child.send(text + "\r")


@pytest.mark.timeout(180)
def test_chat_session_streams_keeps_history_cancels_and_resumes(fresh_upstream):
    stack = fresh_upstream
    child = spawn(stack)
    child.expect(r"conversation (conv_[0-9A-Za-z_]+)")
    conversation = child.match.group(1)

    say(child, "first question")
    child.expect_exact("Echo: first question (messages seen: 1)")

    # The reply streams: its start is on screen while the rest is still coming.
    stack.script({"delay_between_chunks": 0.3})
    say(child, "second question")
    child.expect_exact("Echo:")
    assert "messages seen" not in child.buffer
    child.expect_exact("second question (messages seen: 3)")

    say(child, "/history")
    child.expect(r"user> first question\s+assistant> Echo: first question \(messages seen: 1\)\s+")
    child.expect(r"user> second question\s+assistant> Echo: second question \(messages seen: 3\)")

    # Ctrl-C during a reply cancels it; the session goes on, and nothing of it was stored.
    stack.script({"delay_between_chunks": 0.5})
    say(child, "third question that will be cancelled")
    child.expect_exact("Echo:")
    child.sendintr()
    child.expect_exact("(reply cancelled)")
    say(child, "fourth question")
    child.expect_exact("Echo: fourth question (messages seen: 5)")

    # Errors are one line, and the session goes on.
    say(child, "/model no-such-model")
    say(child, "hello")
    child.expect(r"error: 404 model_not_found: [^\r\n]+\r\n")
    assert "Traceback" not in child.before
    say(child, "/model default")
    say(child, "/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    # A restart with --conversation continues the same conversation; multi-line input (Esc Enter).
    child = spawn(stack, "--conversation", conversation)
    child.expect_exact(f"conversation {conversation}")
    say(child, "again")
    child.expect_exact("Echo: again (messages seen: 7)")
    say(child, "line one\x1b\rline two")
    child.expect(r"Echo: line one\r?\n(\.\.\. )?line two \(messages seen: 9\)")
    say(child, "/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("command", ["bin/llm-gateway", ".venv/bin/llm-gateway"])
def test_one_shot_prints_the_answer(stack, command, tmp_path):
    """The checkout's script and the console script the venv install put in .venv/bin (pyproject
    [project.scripts]), the latter run from another folder, as on an activated venv's PATH."""
    out = subprocess.run(
        [str(ROOT / command), "chat", "-m", "a question for a script"],
        env=chat_env(stack),
        cwd=str(tmp_path if command.startswith(".venv") else ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Echo: a question for a script (messages seen: 1)\n"


def test_one_shot_errors_are_one_line(stack):
    out = subprocess.run(
        [str(ROOT / "bin/llm-gateway"), "chat", "-m", "hi", "--api-key", "sk-wrong"],
        env=chat_env(stack),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert re.fullmatch(r"error: 401 [^\n]+\n", out.stderr), out.stderr
