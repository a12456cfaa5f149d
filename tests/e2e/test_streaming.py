"""Streaming through the local stack with the official openai client's ``stream=True`` (issue 4, Must show)."""

from __future__ import annotations

import time

import openai
import pytest

WORDS = " ".join(f"w{i}" for i in range(40))  # a long reply: the fake echoes it word by word


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def new_conversation(client) -> str:
    return client.conversations.create().id


def messages_of(client, conversation_id: str) -> list[dict]:
    """The conversation's message items, oldest first: role, text and status."""
    items = client.conversations.items.list(conversation_id, order="asc", limit=100)
    return [{"role": i.role, "content": i.content[0].text, "status": i.status} for i in items]


def text_of(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def stats(stack) -> dict:
    return stack.control("/_control/stats")


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Wait for a condition another process will make true (polled: no event crosses the process)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_no_buffering_chunks_arrive_before_the_upstream_continues(client, fresh_upstream):
    fresh_upstream.script({"block_after": 3})
    stream = client.chat.completions.create(
        model="default", messages=user("alpha beta gamma delta epsilon"), stream=True, timeout=15
    )
    it = iter(stream)
    first = [next(it) for _ in range(4)]  # the role chunk, then 3 content chunks
    # The upstream is still holding the rest back: these 4 chunks crossed the gateway on their own.
    assert stats(fresh_upstream)["blocked"] == 1
    assert first[0].choices[0].delta.role == "assistant"
    assert text_of(first) == "Echo: alpha beta "
    fresh_upstream.control("/_control/release", {})
    rest = list(it)
    assert text_of(first + rest) == "Echo: alpha beta gamma delta epsilon (messages seen: 1)"
    assert rest[-1].choices[0].finish_reason == "stop"


def test_stream_text_equals_stored_reply_and_usage_chunk(client, fresh_upstream):
    conv = new_conversation(client)
    chunks = list(
        client.chat.completions.create(
            model="default",
            messages=user("store me please"),
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"conversation_id": conv},
        )
    )
    text = text_of(chunks)
    assert text == "Echo: store me please (messages seen: 1)"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens > 0 and usage_chunk.usage.prompt_tokens > 0
    assert all(c.model_extra["conversation_id"] == conv for c in chunks)

    stored = messages_of(client, conv)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == text
    assert stored[1]["status"] == "completed"
    usage = client.conversations.retrieve(conv).model_extra["usage"]  # the conversation's totals
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        usage_chunk.usage.prompt_tokens,
        usage_chunk.usage.completion_tokens,
    )
    # Without include_usage the stream carries no usage, and the gateway counts tokens itself.
    chunks = list(
        client.chat.completions.create(
            model="default", messages=user("again"), stream=True, extra_body={"conversation_id": conv}
        )
    )
    assert all(c.usage is None for c in chunks)
    stored = messages_of(client, conv)
    assert stored[3]["content"] == text_of(chunks)
    totals = client.conversations.retrieve(conv).model_extra["usage"]
    assert totals["completion_tokens"] > usage["completion_tokens"]  # counted by the gateway itself


def test_upstream_cut_mid_stream_is_an_error_and_stores_nothing(client, fresh_upstream):
    conv = new_conversation(client)
    list(
        client.chat.completions.create(
            model="default", messages=user("first turn"), stream=True, extra_body={"conversation_id": conv}
        )
    )
    fresh_upstream.script({"cut_after": 3})
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(
            model="default", messages=user("doomed turn text"), stream=True, extra_body={"conversation_id": conv}
        ):
            received.append(chunk)
    assert "ended before the reply was complete" in str(err.value)
    assert err.value.body["code"] == "upstream_stream_cut"
    partial = text_of(received)
    assert partial == "Echo: doomed turn "  # the client saw the partial text, then an error, never [DONE]
    assert all(c.choices[0].finish_reason is None for c in received if c.choices)

    stored = messages_of(client, conv)
    assert [m["content"] for m in stored] == ["first turn", "Echo: first turn (messages seen: 1)"]

    # The next turn's upstream history holds the first turn only: no partial text, no orphan user message.
    chunks = list(
        client.chat.completions.create(
            model="default", messages=user("next"), stream=True, extra_body={"conversation_id": conv}
        )
    )
    assert text_of(chunks) == "Echo: next (messages seen: 3)"
    sent = fresh_upstream.upstream_requests()[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["first turn", "Echo: first turn (messages seen: 1)", "next"]
    assert not any(partial in (m["content"] or "") for m in sent)


def test_failure_before_first_chunk_is_retried_transparently(client, fresh_upstream):
    fresh_upstream.script({"status": 503}, {})
    chunks = list(client.chat.completions.create(model="default", messages=user("retry me"), stream=True))
    assert stats(fresh_upstream)["chat_calls"] == 2
    assert [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role] == ["assistant"]
    assert text_of(chunks) == "Echo: retry me (messages seen: 1)"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_second_turn_during_a_stream_gets_409_and_the_first_commits_alone(client, fresh_upstream):
    conv = new_conversation(client)
    fresh_upstream.script({"block_after": 2})
    stream = client.chat.completions.create(
        model="default", messages=user("first one here"), stream=True, extra_body={"conversation_id": conv}, timeout=15
    )
    it = iter(stream)
    head = [next(it) for _ in range(3)]
    assert stats(fresh_upstream)["blocked"] == 1

    for streamed in (True, False):
        with pytest.raises(openai.ConflictError) as err:
            client.chat.completions.create(
                model="default", messages=user("intruder"), stream=streamed, extra_body={"conversation_id": conv}
            )
        assert err.value.body["code"] == "conversation_busy"
    assert stats(fresh_upstream)["chat_calls"] == 1  # the 409s were decided before any upstream call

    fresh_upstream.control("/_control/release", {})
    text = text_of(head + list(it))
    assert text == "Echo: first one here (messages seen: 1)"
    stored = messages_of(client, conv)
    assert [m["content"] for m in stored] == ["first one here", text]


def test_client_disconnect_mid_stream_closes_upstream_and_stores_nothing(client, fresh_upstream):
    conv = new_conversation(client)
    fresh_upstream.script({"delay_between_chunks": 0.05})
    stream = client.chat.completions.create(
        model="default", messages=user(WORDS), stream=True, extra_body={"conversation_id": conv}
    )
    it = iter(stream)
    for _ in range(3):
        next(it)
    stream.close()  # the client goes away mid-stream

    # The gateway closed its upstream connection: the fake saw the disconnect and has no open stream.
    wait_for(
        lambda: stats(fresh_upstream)["disconnects"] == 1 and stats(fresh_upstream)["open_streams"] == 0,
        what="the upstream to see the disconnect",
    )
    # The lease was released at once (no 409 lingering until it expires), and nothing was stored.
    assert messages_of(client, conv) == []

    def next_turn():
        try:
            return client.chat.completions.create(
                model="default", messages=user("after"), extra_body={"conversation_id": conv}
            )
        except openai.ConflictError:  # the release may trail the upstream's view by a few ms
            return None

    r = wait_for(next_turn, what="the lease to be released")  # far sooner than its 95 s expiry
    assert r.choices[0].message.content == "Echo: after (messages seen: 1)"
    assert [m["content"] for m in messages_of(client, conv)] == ["after", r.choices[0].message.content]
