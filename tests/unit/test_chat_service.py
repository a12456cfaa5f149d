"""ChatService over the shared in-memory fakes: validation before any write, the history budget and the
context cap, and the turn lease released on every failure path (upstream error, timeout, client cancel,
a failed commit), plain and streamed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.chat.replies import completion_body, from_routed, from_stored, stored_reply
from llm_gateway.chat.service import ChatService
from llm_gateway.chat.tokens import TOKENS_PER_REPLY, count_message
from llm_gateway.conversations.records import NewMessage
from llm_gateway.deadline import Deadline
from llm_gateway.errors import (
    ContextLengthExceeded,
    ConversationBusy,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llm_gateway.providers.base import UpstreamHTTPError, UpstreamReply, Usage
from llm_gateway.providers.base import UpstreamTimeout as TransportTimeout
from llm_gateway.reports import StreamReport, TurnReport
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import Deployment, ModelAlias, Routing
from llm_gateway.upstream.retry import RetryBudget, RetryPolicy
from llm_gateway.upstream.router import RoutedReply, Router
from tests.fakes import InMemoryConversationStore, ScriptedProvider

TENANT = "t1"


@dataclass(frozen=True)
class SwitchDeadline(Deadline):
    """A deadline a test expires by hand (the stream checks ``expired()`` after every chunk)."""

    switch: list[bool] = field(default_factory=lambda: [False])

    def expired(self) -> bool:
        return self.switch[0]


class Turns:
    def __init__(self, script: list[Any] | None = None, *, context_window: int = 128_000, **alias: Any) -> None:
        self.provider = ScriptedProvider("d1", script)
        policy = RetryPolicy(max_attempts=1, backoff_base=0.01, backoff_max=0.01, budget=RetryBudget(1.0, 100.0))
        router = Router({"d1": self.provider}, policy, connect_timeout=1, read_timeout=5)
        deployment = Deployment(
            name="d1",
            model="m",
            base_url="http://x.test/v1",
            context_window=context_window,
            input_price_per_1m=2.5,
            output_price_per_1m=10.0,
        )
        self.alias = ModelAlias(name="default", deployments=[deployment], **alias)
        self.settings = Settings()
        self.store = InMemoryConversationStore()
        self.chat = ChatService(self.store, Routing({"default": self.alias}), router, self.settings)

    def conversation(self, messages: list[dict[str, Any]] = (), **head: Any) -> str:  # type: ignore[assignment]
        made = self.store.create(TENANT, messages=[NewMessage(m, count_message(m)) for m in messages], **head)
        return made.id

    def request(self, conversation_id: str | None = None, **body: Any) -> ChatCompletionRequest:
        body.setdefault("messages", [{"role": "user", "content": "Hi"}])
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        return ChatCompletionRequest.model_validate({"model": "default", **body})

    def complete(self, conversation_id: str | None = None, **body: Any) -> dict[str, Any]:
        return self.chat.complete(TENANT, self.request(conversation_id, **body), Deadline.after(10), TurnReport())

    def stream(self, conversation_id: str | None = None, deadline: Deadline | None = None, **body: Any) -> Any:
        report = TurnReport(stream=StreamReport(0.0))
        request = self.request(conversation_id, stream=True, **body)
        return self.chat.stream(TENANT, request, deadline or Deadline.after(10), report)

    def upstream_roles(self, index: int = -1) -> list[tuple[str, str]]:
        return [(m["role"], m.get("content") or "") for m in self.provider.bodies[index]["messages"]]

    def assert_untouched(self, conversation_id: str, writes: int) -> None:
        """Nothing stored, and the conversation free for the next turn."""
        assert self.store.writes == writes
        assert not self.store.held(TENANT, conversation_id)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# ---- validation before any write ---------------------------------------------------------------

BAD_TURNS = {
    "unknown model": ({"model": "nope"}, NotFound, "model"),
    "n above one on a conversation": ({"n": 2}, InvalidRequest, "n"),
    "only system messages": ({"messages": [{"role": "system", "content": "Be brief"}]}, InvalidRequest, "messages"),
    "too many messages": ({"messages": [user("x")] * 65}, InvalidRequest, "messages"),
    "a message over the size limit": ({"messages": [user("x" * 262_145)]}, PayloadTooLarge, "messages[0]"),
    "max_tokens over the alias cap": ({"max_tokens": 128_001}, InvalidRequest, "max_tokens"),
    "a message with no item form": (
        {"messages": [user("a"), {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        InvalidRequest,
        "messages[1].content[0].type",
    ),
}


@pytest.mark.parametrize("body, error, param", BAD_TURNS.values(), ids=BAD_TURNS.keys())
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_bad_turn_is_refused_before_the_lease_the_upstream_or_any_write(body, error, param, streamed):
    t = Turns()
    conversation = t.conversation([user("earlier")])
    writes = t.store.writes
    with pytest.raises(error) as raised:
        (t.stream if streamed else t.complete)(conversation, **body)
    assert raised.value.param == param
    assert t.store.leases_taken == 0 and t.store.history_reads == []
    assert t.provider.bodies == []
    t.assert_untouched(conversation, writes)


def test_an_unknown_conversation_is_a_404_with_no_upstream_call():
    t = Turns()
    with pytest.raises(NotFound):
        t.complete("conv_" + "0" * 32)
    assert t.provider.bodies == [] and t.store.writes == 0


def test_a_turn_while_another_holds_the_lease_is_a_409_before_the_upstream():
    t = Turns()
    conversation = t.conversation([user("earlier")])
    t.store.acquire_lease(TENANT, conversation, 30)
    with pytest.raises(ConversationBusy):
        t.complete(conversation)
    assert t.provider.bodies == [] and t.store.get(TENANT, conversation).message_count == 1


# ---- history budget and context cap ------------------------------------------------------------


def history(count: int) -> list[dict[str, Any]]:
    return [
        user(f"message {i}") if i % 2 == 0 else {"role": "assistant", "content": f"reply {i}"} for i in range(count)
    ]


def test_the_history_sent_is_the_newest_messages_within_the_message_budget():
    t = Turns(history_max_messages=3)
    conversation = t.conversation(history(10))
    t.complete(conversation, messages=[user("now")])
    assert t.upstream_roles() == [
        ("assistant", "reply 7"),
        ("user", "message 8"),
        ("assistant", "reply 9"),
        ("user", "now"),
    ]
    assert t.store.history_reads == [(3, 8_000)]


def test_the_history_sent_is_the_newest_messages_within_the_token_budget():
    per_message = count_message(user("message 0"))
    t = Turns(history_max_tokens=4 * per_message)
    conversation = t.conversation([user(f"message {i}") for i in range(10)])
    t.complete(conversation, messages=[user("now")])
    assert [c for _, c in t.upstream_roles()] == ["message 6", "message 7", "message 8", "message 9", "now"]


def test_the_context_window_caps_the_history_below_the_alias_budget():
    """The hard cap: history + new messages + the completion budget never exceed the context window."""
    per_message = count_message(user("message 0"))
    new = count_message(user("now"))
    max_tokens = 100
    # room for exactly three history messages once the new message, the reply framing and max_tokens are in
    window = max_tokens + new + TOKENS_PER_REPLY + 3 * per_message
    t = Turns(context_window=window, history_max_tokens=100_000)
    conversation = t.conversation([user(f"message {i}") for i in range(10)])
    t.complete(conversation, messages=[user("now")], max_tokens=max_tokens)
    assert [c for _, c in t.upstream_roles()] == ["message 7", "message 8", "message 9", "now"]
    assert t.store.history_reads[-1][1] == 3 * per_message


def test_new_messages_that_do_not_fit_the_context_window_are_a_400_and_release_the_lease():
    t = Turns(context_window=2_000)
    conversation = t.conversation(history(4))
    writes = t.store.writes
    with pytest.raises(ContextLengthExceeded):
        t.complete(conversation, messages=[user("word " * 3_000)], max_tokens=100)
    assert t.provider.bodies == []
    t.assert_untouched(conversation, writes)


def test_a_tool_result_whose_call_was_trimmed_away_is_not_sent():
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    t = Turns(history_max_messages=2)
    conversation = t.conversation(
        [
            user("use the tool"),
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ]
    )
    t.complete(conversation, messages=[user("thanks")])
    assert t.upstream_roles() == [("assistant", "It is 42."), ("user", "thanks")]


# ---- the lease on every failure path -----------------------------------------------------------

PLAIN_FAILURES = {
    "upstream error": (UpstreamHTTPError(500, "boom"), UpstreamError),
    "upstream timeout": (TransportTimeout("read timed out"), UpstreamTimeout),
}


@pytest.mark.parametrize("failure, error", PLAIN_FAILURES.values(), ids=PLAIN_FAILURES.keys())
def test_a_failed_upstream_call_releases_the_lease_and_stores_nothing(failure, error):
    t = Turns([failure, "second try"])
    conversation = t.conversation([user("earlier")])
    writes = t.store.writes
    with pytest.raises(error):
        t.complete(conversation)
    t.assert_untouched(conversation, writes)
    assert t.store.leases_released == 1
    t.complete(conversation)  # the conversation is free at once
    assert t.store.get(TENANT, conversation).message_count == 3


@pytest.mark.parametrize("failure", [ConversationBusy("lost the lease"), RuntimeError("DynamoDB is down")])
def test_a_failed_commit_releases_the_lease(failure):
    t = Turns(["a reply"])
    conversation = t.conversation([user("earlier")])
    writes = t.store.writes
    t.store.fail_commit = failure
    with pytest.raises(type(failure)):
        t.complete(conversation)
    assert len(t.provider.bodies) == 1
    t.assert_untouched(conversation, writes)


def drain(stream: Any) -> list[dict[str, Any]]:
    chunks = []
    try:
        while (chunk := stream.next_chunk()) is not None:
            chunks.append(chunk)
    finally:
        stream.close()
    return chunks


def test_a_streamed_turn_commits_and_frees_the_conversation():
    t = Turns(["one two three"])
    conversation = t.conversation([user("earlier")])
    chunks = drain(t.stream(conversation))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "one two three"
    assert all(c["conversation_id"] == conversation for c in chunks)
    assert not t.store.held(TENANT, conversation)
    stored = t.store.messages_of[TENANT, conversation]
    assert [m.body for m in stored.values()][-1] == {"role": "assistant", "content": "one two three"}


def test_a_stream_cut_by_the_upstream_releases_the_lease_and_stores_nothing():
    t = Turns([{"text": "one two three four", "cut": 3}])
    conversation = t.conversation([user("earlier")])
    writes = t.store.writes
    stream = t.stream(conversation)
    with pytest.raises(GatewayError):
        drain(stream)
    assert stream.stats.outcome == "upstream_error"
    t.assert_untouched(conversation, writes)


def test_a_stream_past_its_deadline_releases_the_lease_and_stores_nothing():
    t = Turns(["one two three four"])
    conversation = t.conversation([user("earlier")])
    writes = t.store.writes
    deadline = SwitchDeadline.after(10)
    stream = t.stream(conversation, deadline=deadline)
    stream.next_chunk()
    deadline.switch[0] = True
    with pytest.raises(UpstreamTimeout):
        drain(stream)
    t.assert_untouched(conversation, writes)


def test_a_client_that_goes_away_mid_stream_releases_the_lease_and_stores_nothing():
    t = Turns(["one two three four"])
    conversation = t.conversation([user("earlier")])
    writes = t.store.writes
    stream = t.stream(conversation)
    assert stream.next_chunk() is not None
    assert t.store.held(TENANT, conversation)  # held while the stream runs
    stream.abort()  # what the HTTP layer does when the client disconnects, then close()
    stream.close()
    assert stream.stats.outcome == "client_disconnect"
    t.assert_untouched(conversation, writes)


def test_a_streamed_turn_whose_commit_fails_releases_the_lease():
    t = Turns(["one two"])
    conversation = t.conversation([user("earlier")])
    writes = t.store.writes
    t.store.fail_commit = RuntimeError("DynamoDB is down")
    stream = t.stream(conversation)
    with pytest.raises(RuntimeError):
        drain(stream)
    assert stream.stats.outcome == "commit_failed"
    t.assert_untouched(conversation, writes)


def test_a_stream_whose_upstream_fails_before_the_first_chunk_releases_the_lease():
    t = Turns([UpstreamHTTPError(503, "busy")])
    conversation = t.conversation([user("earlier")])
    writes = t.store.writes
    with pytest.raises(UpstreamUnavailable):
        t.stream(conversation)
    t.assert_untouched(conversation, writes)


# ---- one reply, three paths ---------------------------------------------------------------------

CALL = {"id": "call_7", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
REPLIES = {
    "text": {"text": "The answer is 42."},
    "tool call": {"message": {"content": None, "tool_calls": [CALL]}, "finish_reason": "tool_calls"},
    "text and a tool call": {"message": {"content": "Looking.", "tool_calls": [CALL]}, "finish_reason": "tool_calls"},
}


def last_stored(t: Turns, conversation: str) -> Any:
    stored = t.store.messages_of[TENANT, conversation]
    return stored[max(stored)]


@pytest.mark.parametrize("step", REPLIES.values(), ids=REPLIES.keys())
def test_a_plain_a_streamed_and_a_replayed_turn_store_the_same_reply_and_answer_the_same_body(step):
    """The same upstream result (reply, usage, id, created), three ways: the stored assistant message
    (body, token count, metadata) and the chat.completion are built once, in chat/replies.py."""
    plain = Turns([step])
    conversation = plain.conversation([user("earlier")])
    body = plain.chat.complete(TENANT, plain.request(conversation), Deadline.after(10), TurnReport(), turn_id="job_1")
    stored = last_stored(plain, conversation)

    # replayed: the idempotent turn committed before answers from its stored reply, with no call
    replayed = plain.chat.complete(
        TENANT, plain.request(conversation), Deadline.after(10), TurnReport(), turn_id="job_1"
    )
    assert len(plain.provider.bodies) == 1
    assert replayed == body

    # streamed: the same result as chunks (with the usage chunk the client asked for)
    streamed = Turns([step])
    other = streamed.conversation([user("earlier")])
    stream = streamed.stream(other, stream_options={"include_usage": True})
    drain(stream)
    from_stream = last_stored(streamed, other)
    assert (from_stream.body, from_stream.tokens, from_stream.meta) == (stored.body, stored.tokens, stored.meta)
    assert stream.completion is not None
    assert completion_body(stream.completion, conversation) == body

    assert body["object"] == "chat.completion" and body["conversation_id"] == conversation
    assert body["choices"][0]["message"] == stored.body
    assert stored.meta["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "cost_usd": 0.000045}
    ChatCompletion.model_validate(body)


def test_the_stored_reply_round_trips_through_a_replay():
    t = Turns(["Hello."])
    conversation = t.conversation([user("earlier")])
    t.chat.complete(TENANT, t.request(conversation), Deadline.after(10), TurnReport(), turn_id="job_1")
    stored = last_stored(t, conversation)
    again = stored_reply(from_stored(stored, "job_1"))
    assert (again.body, again.tokens, again.meta) == (stored.body, stored.tokens, stored.meta)


def test_a_plain_turn_passes_through_what_the_upstream_adds_beyond_the_stored_reply():
    """Other choices, logprobs and usage details reach the client of a stateless turn; the message of
    choice 0 is the stored form (no null fields) on every path."""
    t = Turns()
    upstream = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1_700_000_001,
        "model": "m",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a", "refusal": None},
                "finish_reason": "stop",
                "logprobs": {"content": []},
            },
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "stop", "logprobs": None},
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 1,
            "total_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
    }
    deployment = t.alias.deployments[0]
    body = completion_body(from_routed(RoutedReply(UpstreamReply(upstream, Usage(3, 1)), deployment)))
    assert body["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "a"},
        "finish_reason": "stop",
        "logprobs": {"content": []},
    }
    assert body["choices"][1] == upstream["choices"][1]
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 2} and body["system_fingerprint"] == "fp_1"
    ChatCompletion.model_validate(body)
