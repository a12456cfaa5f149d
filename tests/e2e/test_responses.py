"""OpenAI Responses through the local stack with the official openai client (issue 11, Must show).

Every body and event is the SDK's own type (``openai.types.responses``); the fake upstream
(local/fake_upstream.py) records what the gateway sent, so chains are checked at the upstream.
"""

from __future__ import annotations

import concurrent.futures
import time

import openai
import pytest
from openai.types.responses import Response

STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def required_fields_sent(response: Response) -> None:
    required = {name for name, f in Response.model_fields.items() if f.is_required()}
    assert required <= response.model_fields_set
    Response.model_validate(response.model_dump(mode="json"))  # strict: every field well-typed


def upstream_texts(stack, index: int = -1) -> list[tuple[str, str]]:
    body = stack.upstream_requests()[index]["body"]
    return [(m["role"], m["content"]) for m in body["messages"]]


def chat_calls(stack) -> int:
    return stack.control("/_control/stats")["chat_calls"]


def test_create_gives_output_text_and_retrieve_delete_and_input_items_work(client, fresh_upstream):
    response = client.responses.create(model="default", input="Hi there")
    required_fields_sent(response)
    assert response.output_text == "Echo: Hi there (messages seen: 1)"
    assert client.responses.retrieve(response.id) == response

    inputs = [{"role": "user", "content": f"part {i}"} for i in range(5)]
    many = client.responses.create(model="default", input=inputs, instructions="Be brief")
    assert upstream_texts(fresh_upstream)[0] == ("system", "Be brief")
    listed = list(client.responses.input_items.list(many.id, limit=2, order="asc"))
    assert [item.content[0].text for item in listed] == [f"part {i}" for i in range(5)]
    assert [i.id for i in client.responses.input_items.list(many.id, limit=2)] == [i.id for i in reversed(listed)]

    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_a_stream_sends_typed_events_in_order_with_the_stored_text(client, fresh_upstream):
    events = list(client.responses.create(model="default", input="alpha beta gamma", stream=True))
    kinds = [e.type for e in events]
    assert [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k] == STREAM_ORDER
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == final.output_text == "Echo: alpha beta gamma (messages seen: 1)"
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == text and stored.output == final.output


def test_three_chained_responses_carry_the_turns_in_order_and_a_fork_only_its_branch(client, fresh_upstream):
    r1 = client.responses.create(model="default", input="one")
    r2 = client.responses.create(model="default", input="two", previous_response_id=r1.id)
    r3 = client.responses.create(model="default", input="three", previous_response_id=r2.id)
    assert r3.previous_response_id == r2.id
    assert upstream_texts(fresh_upstream) == [
        ("user", "one"),
        ("assistant", r1.output_text),
        ("user", "two"),
        ("assistant", r2.output_text),
        ("user", "three"),
    ]
    client.responses.create(model="default", input="fork", previous_response_id=r1.id)
    assert upstream_texts(fresh_upstream) == [("user", "one"), ("assistant", r1.output_text), ("user", "fork")]


def test_store_false_then_previous_response_id_is_404(client, fresh_upstream):
    unstored = client.responses.create(model="default", input="secret", store=False)
    assert unstored.store is False
    calls = chat_calls(fresh_upstream)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="default", input="again", previous_response_id=unstored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    assert chat_calls(fresh_upstream) == calls


def test_100_sequential_chained_responses_each_see_their_parent(client, fresh_upstream):
    previous = None
    for turn in range(100):
        response = client.responses.create(model="default", input=f"t{turn}", previous_response_id=previous)
        # the fake counts the messages it was sent: every earlier turn (2 each) plus this input
        assert response.output_text == f"Echo: t{turn} (messages seen: {2 * turn + 1})"
        previous = response.id


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input": "x", "conversation": "conv_x", "previous_response_id": "resp_x"},
        {"input": "x", "previous_response_id": "resp_unknown"},
        {"input": "x", "conversation": "conv_unknown"},
        {"input": "x", "tools": [{"type": "web_search"}]},
        {"input": [{"type": "function_call_output", "output": "no call id"}]},
    ],
)
def test_bad_input_is_a_4xx_with_no_upstream_call(client, fresh_upstream, kwargs):
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as info:
        client.responses.create(model="default", **kwargs)
    assert info.value.body is not None and {"message", "type", "code", "param"} <= set(info.value.body)
    assert chat_calls(fresh_upstream) == 0


def test_an_upstream_cut_mid_stream_is_response_failed_and_nothing_is_stored(client, fresh_upstream):
    fresh_upstream.script({"cut_after": 2})
    events = list(client.responses.create(model="default", input="one two three four five", stream=True, timeout=10))
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(failed.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="default", input="next", previous_response_id=failed.id)


def test_responses_on_a_conversation_are_its_items_and_a_concurrent_turn_is_409(client, fresh_upstream):
    conversation = client.conversations.create()
    first = client.responses.create(model="default", input="hello", conversation=conversation.id)
    assert first.conversation is not None and first.conversation.id == conversation.id
    client.responses.create(model="default", input="again", conversation={"id": conversation.id})
    assert upstream_texts(fresh_upstream)[:2] == [("user", "hello"), ("assistant", first.output_text)]
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [(i.type, i.role) for i in items] == [("message", r) for r in ("user", "assistant") * 2]
    assert items[1].content[0].text == first.output_text
    # the chat-completions view of the same conversation sends them upstream as history
    client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "chat"}], extra_body={"conversation_id": conversation.id}
    )
    assert len(upstream_texts(fresh_upstream)) == 5

    fresh_upstream.script({"delay_first_byte": 1.0}, {})

    def turn(text: str):
        try:
            return client.responses.create(model="default", input=text, conversation=conversation.id)
        except openai.ConflictError as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(turn, "slow")

        time.sleep(0.3)
        fast = pool.submit(turn, "fast")
        outcomes = [slow.result(), fast.result()]
    assert sum(isinstance(o, openai.ConflictError) for o in outcomes) == 1
    assert sum(isinstance(o, Response) for o in outcomes) == 1


def test_logs_carry_no_responses_content(client, stack):
    canary = "canary-responses-e2e-51ab9e"
    response = client.responses.create(model="default", input=canary, instructions=f"{canary}-instructions")
    assert canary in response.output_text  # it went through the gateway and back
    events = list(client.responses.create(model="default", input=canary, previous_response_id=response.id, stream=True))
    assert events[-1].type == "response.completed"
    client.responses.input_items.list(response.id)
    deadline = time.monotonic() + 10
    while (
        len([line for line in stack.log_lines() if line.get("route") == "/v1/responses/{response_id}/input_items"]) < 1
    ):
        assert time.monotonic() < deadline, "no access log line for the input_items request"
        time.sleep(0.02)
    assert canary not in stack.log.read_text()
    assert [line for line in stack.log_lines() if line.get("route") == "/v1/responses" and line.get("status") == 200]


def test_a_stored_response_replays_its_events_with_retrieve_stream_and_starting_after(client, fresh_upstream):
    streamed = list(client.responses.create(model="default", input="replay me please", stream=True))
    final = streamed[-1].response
    replayed = list(client.responses.retrieve(final.id, stream=True))
    assert [e.sequence_number for e in replayed] == list(range(len(replayed)))
    assert replayed[-1].type == "response.completed" and replayed[-1].response == client.responses.retrieve(final.id)
    text = "".join(e.delta for e in replayed if e.type == "response.output_text.delta")
    assert text == final.output_text
    later = list(client.responses.retrieve(final.id, stream=True, starting_after=3))
    assert [e.sequence_number for e in later] == list(range(4, len(replayed)))
