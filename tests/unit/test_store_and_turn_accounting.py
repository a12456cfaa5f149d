"""Store and turn details that moto cannot show: DynamoDB's transaction conflicts (botocore
Stubber), and how a reply is counted as history."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import ANY, Stubber

from llm_gateway.chat.replies import from_routed, stored_reply
from llm_gateway.chat.tokens import count_message
from llm_gateway.conversations.store import DynamoConversationStore
from llm_gateway.errors import ConversationBusy, NotFound
from llm_gateway.providers.base import UpstreamReply, Usage
from llm_gateway.upstream.aliases import Deployment
from llm_gateway.upstream.router import RoutedReply


@pytest.fixture
def stubbed():
    client = boto3.client("dynamodb", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield DynamoConversationStore("t", client=client), stubber


def test_a_lease_attempt_during_another_turns_commit_is_409_not_500(stubbed):
    """DynamoDB rejects a single-item write to an item in an ongoing transaction with
    TransactionConflictException: on the head, that is a turn committing, so the conversation is busy."""
    store, stubber = stubbed
    stubber.add_client_error(
        "update_item",
        service_error_code="TransactionConflictException",
        service_message="Transaction is ongoing for the item",
        http_status_code=400,
    )
    with pytest.raises(ConversationBusy):
        store.acquire_lease("tenant-a", "conv_1", 30)


def test_a_delete_during_a_commit_is_409(stubbed):
    store, stubber = stubbed
    # a delete's first write marks the head deleted (an update): refused while a turn commits on it
    stubber.add_client_error("update_item", service_error_code="TransactionConflictException", http_status_code=400)
    with pytest.raises(ConversationBusy):
        store.delete("tenant-a", "conv_1")


def test_a_lease_on_a_missing_head_is_404_and_on_a_held_one_409(stubbed):
    store, stubber = stubbed
    stubber.add_client_error("update_item", service_error_code="ConditionalCheckFailedException", http_status_code=400)
    stubber.add_client_error(
        "update_item",
        service_error_code="ConditionalCheckFailedException",
        http_status_code=400,
        response_meta={},
        modeled_fields={"Item": {"PK": {"S": "x"}}},
    )
    with pytest.raises(NotFound):
        store.acquire_lease("tenant-a", "conv_1", 30)
    with pytest.raises(ConversationBusy):
        store.acquire_lease("tenant-a", "conv_1", 30)


def test_messages_after_is_exclusive_for_every_seq_including_0(stubbed):
    store, stubber = stubbed
    for after, start in ((None, "M#0000000000"), (0, "M#0000000001"), (41, "M#0000000042")):
        stubber.add_response(
            "query",
            {"Items": []},
            expected_params={
                "TableName": "t",
                "KeyConditionExpression": ANY,
                "ScanIndexForward": True,
                "Limit": 3,
                "ConsistentRead": True,
                "ExpressionAttributeValues": {
                    ":pk": {"S": "T#tenant-a#C#conv_1"},
                    ":lo": {"S": start},
                    ":hi": {"S": "M#9999999999"},
                },
            },
        )
        assert store.messages("tenant-a", "conv_1", limit=2, after=after) == ([], False)
    stubber.assert_no_pending_responses()


def test_a_reply_counts_as_history_like_any_message():
    """Stored tokens of a reply = its completion tokens + the per-message framing, so the
    history budget and the context-window cap count replies as they count the prompt."""
    deployment = Deployment(name="d", model="m", base_url="http://x")
    text = "The answer is forty-two, as computed."
    from llm_gateway.chat.tokens import count_text

    body = {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
    }
    message = stored_reply(from_routed(RoutedReply(UpstreamReply(body, Usage(20, count_text(text))), deployment)))
    assert message.tokens == count_message({"role": "assistant", "content": text})
    # without usage from the upstream, the reply is counted locally
    message = stored_reply(from_routed(RoutedReply(UpstreamReply(body, Usage(0, 0)), deployment)))
    assert message.tokens == count_message({"role": "assistant", "content": text})


@pytest.mark.parametrize("upstream_usage", [True, False], ids=["usage-reported", "usage-counted"])
def test_a_streamed_reply_counts_as_history_like_a_non_streamed_one(upstream_usage):
    """The same reply stored by a streamed turn costs the same history tokens as by a plain one."""
    import time

    from llm_gateway.chat.service import TurnReport
    from llm_gateway.chat.streaming import ChatStream, StreamReport
    from llm_gateway.chat.tokens import count_text
    from llm_gateway.deadline import Deadline
    from llm_gateway.upstream.retry import CallStats
    from llm_gateway.upstream.router import RoutedStream

    deployment = Deployment(name="d", model="m", base_url="http://x")
    text = "The answer is forty-two, as computed."
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if upstream_usage:
        chunks.append({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": count_text(text)}})

    class Turn:
        committed = None

        def renew(self): ...
        def release(self): ...

        def commit(self, reply, usage, cost_usd):
            Turn.committed = reply

    stream = ChatStream(
        RoutedStream(chunks[0], iter(chunks[1:]), deployment, CallStats()),
        TurnReport(stream=StreamReport(time.perf_counter())),
        Deadline.after(30),
        conversation_id="conv_1",
        turn=Turn(),
        estimate_prompt_tokens=lambda: 20,
        renew_every=60,
    )
    assert [c["choices"] for c in stream][0][0]["delta"]["content"] == text
    stream.close()
    assert Turn.committed.body == {"role": "assistant", "content": text}
    assert Turn.committed.tokens == count_message({"role": "assistant", "content": text})


def test_a_commit_is_one_idempotent_transaction_per_lease(stubbed):
    """botocore retries a TransactWriteItems whose answer was lost (a timeout, a 5xx); without a
    ClientRequestToken the retry fails the lease/version conditions the first one just changed, and a
    stored turn is reported as a 409 (the client retries it: a duplicate turn). With the lease's id as
    token DynamoDB answers the retry as the same transaction."""
    from llm_gateway.conversations.store import NewMessage, TurnUsage

    store, stubber = stubbed
    head = {
        "PK": {"S": "T#tenant-a#C#conv_1"},
        "SK": {"S": "META"},
        "conversation_id": {"S": "conv_1"},
        "tenant": {"S": "tenant-a"},
        "version": {"N": "0"},
        "message_count": {"N": "0"},
    }
    stubber.add_response("update_item", {"Attributes": head})
    lease = store.acquire_lease("tenant-a", "conv_1", 30)  # the store mints the lease id (the token)
    assert 1 <= len(lease.lease_id) <= 36  # ClientRequestToken's limit: a longer id fails every commit
    stubber.add_response(
        "transact_write_items", {}, expected_params={"TransactItems": ANY, "ClientRequestToken": lease.lease_id}
    )
    store.commit_turn(lease, [NewMessage({"role": "user", "content": "hi"}, 5)], usage=TurnUsage())
    stubber.assert_no_pending_responses()


def test_a_stream_past_its_deadline_ends_with_a_timeout_and_stores_nothing():
    import time

    from llm_gateway.chat.service import TurnReport
    from llm_gateway.chat.streaming import ChatStream, StreamReport
    from llm_gateway.deadline import Deadline
    from llm_gateway.errors import UpstreamTimeout
    from llm_gateway.upstream.retry import CallStats
    from llm_gateway.upstream.router import RoutedStream

    events: list[str] = []

    class Turn:
        def renew(self):
            events.append("renew")

        def release(self):
            events.append("release")

        def commit(self, reply, usage, cost_usd):
            events.append("commit")

    chunks = [{"choices": [{"index": 0, "delta": {"content": "w"}}]}] * 3 + [
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    ]
    report = TurnReport(stream=StreamReport(time.perf_counter()))
    stream = ChatStream(
        RoutedStream(chunks[0], iter(chunks[1:]), Deployment(name="d", model="m", base_url="http://x"), CallStats()),
        report,
        Deadline.after(0.0),
        conversation_id="conv_1",
        turn=Turn(),
        estimate_prompt_tokens=lambda: 1,
        renew_every=60,
    )
    with pytest.raises(UpstreamTimeout) as failure:
        stream.next_chunk()
    assert failure.value.code == "stream_deadline_exceeded"
    stream.close()
    assert events == ["release"] and report.stream.outcome == "upstream_error"


def test_a_replayed_turn_reads_every_message_even_when_dynamodb_leaves_keys_unprocessed(stubbed, monkeypatch):
    """BatchGetItem may return part of the keys as UnprocessedKeys (throttling): they are asked again,
    so a replayed job rebuilds its reply from the right message, never from a partial read."""
    import llm_gateway.aws.dynamo as dynamo

    monkeypatch.setattr(dynamo.time, "sleep", lambda s: None)
    store, stubber = stubbed
    pk = {"S": "T#tenant-a#C#conv_1"}
    stubber.add_response(
        "get_item", {"Item": {"PK": pk, "SK": {"S": "TURN#job_1"}, "first_seq": {"N": "4"}, "count": {"N": "2"}}}
    )

    def item(seq: int, role: str) -> dict:
        return {
            "PK": pk,
            "SK": {"S": f"M#{seq:010d}"},
            "msg": {"S": f'{{"role": "{role}", "content": "m{seq}"}}'},
            "tokens": {"N": "5"},
            "created_at": {"N": "0"},
        }

    second_key = {"PK": pk, "SK": {"S": "M#0000000005"}}
    stubber.add_response(
        "batch_get_item",
        {
            "Responses": {"t": [item(4, "user")]},
            "UnprocessedKeys": {"t": {"Keys": [second_key], "ConsistentRead": True}},
        },
    )
    stubber.add_response(
        "batch_get_item",
        {"Responses": {"t": [item(5, "assistant")]}, "UnprocessedKeys": {}},
        expected_params={"RequestItems": {"t": {"Keys": [second_key], "ConsistentRead": True}}},
    )
    messages = store.turn_messages("tenant-a", "conv_1", "job_1")
    assert [(m.seq, m.role) for m in messages] == [(4, "user"), (5, "assistant")]
    stubber.assert_no_pending_responses()


def test_list_asks_one_more_than_the_page_so_has_more_is_exact(stubbed):
    """DynamoDB returns a LastEvaluatedKey whenever it stops at Limit, even with nothing after it; so the
    store asks for limit + 1 and has more only when that extra item exists, and asks again when its 1 MB
    page limit cut a page short (moto omits the key, so this is checked against DynamoDB's documented
    behaviour here)."""
    store, stubber = stubbed

    def head(n: int) -> dict:
        return {
            "PK": {"S": f"T#tenant-a#C#conv_{n}"},
            "SK": {"S": "META"},
            "conversation_id": {"S": f"conv_{n}"},
            "tenant": {"S": "tenant-a"},
            "created_at": {"N": str(n)},
            "updated_at": {"N": str(n)},
            "GSI1PK": {"S": "T#tenant-a#CONV"},
            "GSI1SK": {"S": f"{n:015d}#conv_{n}"},
        }

    def key(item: dict) -> dict:
        return {k: item[k] for k in ("PK", "SK", "GSI1PK", "GSI1SK")}

    def expect(items: list[dict], last_key: bool, limit: int = 3, start: dict | None = None) -> None:
        response: dict = {"Items": items}
        if last_key:
            response["LastEvaluatedKey"] = key(items[-1])
        params = {
            "TableName": "t",
            "IndexName": "GSI1",
            "KeyConditionExpression": "GSI1PK = :pk",
            "ExpressionAttributeValues": {":pk": {"S": "T#tenant-a#CONV"}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            params["ExclusiveStartKey"] = start
        stubber.add_response("query", response, expected_params=params)

    expect([head(2), head(1)], last_key=False)  # exactly a page: nothing after it
    conversations, has_more = store.list_conversations("tenant-a", limit=2, after=None)
    assert [c.id for c in conversations] == ["conv_2", "conv_1"] and has_more is False

    expect([head(3), head(2), head(1)], last_key=True)  # the extra item exists
    conversations, has_more = store.list_conversations("tenant-a", limit=2, after=None)
    assert [c.id for c in conversations] == ["conv_3", "conv_2"] and has_more is True

    expect([head(3)], last_key=True)  # cut short at 1 MB: the store asks for the rest
    expect([head(2)], last_key=False, limit=2, start=key(head(3)))
    conversations, has_more = store.list_conversations("tenant-a", limit=2, after=None)
    assert [c.id for c in conversations] == ["conv_3", "conv_2"] and has_more is False
    stubber.assert_no_pending_responses()


def test_a_message_page_cut_short_at_1_mb_is_completed_so_has_more_stays_exact(stubbed):
    """DynamoDB stops a Query at 1 MB with a LastEvaluatedKey: the store asks again for what is missing
    (limit + 1 in all), and has more only when that extra item exists."""
    store, stubber = stubbed

    def message(seq: int) -> dict:
        return {
            "PK": {"S": "T#tenant-a#C#conv_1"},
            "SK": {"S": f"M#{seq:010d}"},
            "msg": {"S": f'{{"role":"user","content":"m{seq}"}}'},
            "tokens": {"N": "5"},
            "created_at": {"N": "1"},
        }

    def key(seq: int) -> dict:
        return {"PK": {"S": "T#tenant-a#C#conv_1"}, "SK": {"S": f"M#{seq:010d}"}}

    def expect(seqs: list[int], limit: int, last: int | None, start: int | None = None, desc: bool = True) -> None:
        response: dict = {"Items": [message(s) for s in seqs]}
        if last is not None:
            response["LastEvaluatedKey"] = key(last)
        params = {
            "TableName": "t",
            "KeyConditionExpression": ANY,
            "ExpressionAttributeValues": ANY,
            "ScanIndexForward": not desc,
            "ConsistentRead": True,
            "Limit": limit,
        }
        if start is not None:
            params["ExclusiveStartKey"] = key(start)
        stubber.add_response("query", response, expected_params=params)

    expect([9, 8], limit=4, last=8)  # 1 MB reached after two items
    expect([7], limit=2, last=None, start=8)  # the conversation ends: nothing after the page
    page, more = store.messages_page("tenant-a", "conv_1", start=None, descending=True, limit=3)
    assert [m.seq for m in page] == [9, 8, 7] and more is False

    expect([3, 4], limit=4, last=4, desc=False)
    expect([5, 6], limit=2, last=6, start=4, desc=False)  # the extra item exists
    page, more = store.messages_page("tenant-a", "conv_1", start=3, descending=False, limit=3)
    assert [m.seq for m in page] == [3, 4, 5] and more is True
    stubber.assert_no_pending_responses()
