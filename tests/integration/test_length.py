"""Long conversations (issue 2, "Length"): a turn's cost is bounded by its history budget,
no item nears DynamoDB's 400 KB limit, trimming keeps the system prompt and the newest
messages that fit."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from llm_gateway.chat.tokens import TOKENS_PER_REPLY, count_message
from llm_gateway.conversations.store import DynamoConversationStore, conversation_pk, message_sk
from tests.conftest import new_aws
from tests.integration.conftest import (
    chat,
    conversation_messages,
    count_calls,
    make_gateway,
    mocked_upstream,
    regateway,
)

LONG, MEDIUM, SHORT = 10_000, 300, 10
SYSTEM = "You are a careful assistant."
ITEM_LIMIT = 400 * 1024


def generated(i: int) -> dict:
    """The i-th stored message: alternating roles, varied lengths (so token counts vary)."""
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "lorem " * (i % 5)}


def write_messages(client, table: str, tenant: str, conversation_id: str, count: int) -> None:
    """Write ``count`` message items in the store's item format (BatchWriteItem: fast setup)."""
    pk = {"S": conversation_pk(tenant, conversation_id)}

    def item(i: int) -> dict:
        body = generated(i)
        return {
            "PK": pk,
            "SK": {"S": message_sk(i)},
            "msg": {"S": json.dumps(body, separators=(",", ":"))},
            "tokens": {"N": str(count_message(body))},
            "created_at": {"N": "1700000000000"},
        }

    def batch(start: int) -> None:
        pending = {table: [{"PutRequest": {"Item": item(i)}} for i in range(start, min(start + 25, count))]}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(batch, range(0, count, 25)))
    client.update_item(
        TableName=table,
        Key={"PK": pk, "SK": {"S": "META"}},
        UpdateExpression="SET message_count = :n",
        ExpressionAttributeValues={":n": {"N": str(count)}},
    )


@pytest.fixture(scope="module")
def long_aws(moto_server):
    """One table holding a 10,000-, a 300- and a 10-message conversation of tenant-a."""
    aws = new_aws(moto_server)
    client = aws.client("dynamodb")
    store = DynamoConversationStore(aws.res.table_name, client=client)
    aws.conversations = {}
    for name, count in (("long", LONG), ("medium", MEDIUM), ("short", SHORT)):
        conv = store.create(
            "tenant-a", system=SYSTEM, system_tokens=count_message({"role": "system", "content": SYSTEM})
        )
        write_messages(client, aws.res.table_name, "tenant-a", conv.id, count)
        aws.conversations[name] = conv.id
    return aws


def newest_stored(aws, conversation_id: str, limit: int) -> list[tuple[dict, int]]:
    """The test's own oracle: the newest stored messages (body, tokens), newest first."""
    resp = aws.client("dynamodb").query(
        TableName=aws.res.table_name,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :m)",
        ExpressionAttributeValues={":pk": {"S": conversation_pk("tenant-a", conversation_id)}, ":m": {"S": "M#"}},
        ScanIndexForward=False,
        Limit=limit,
        ConsistentRead=True,
    )
    return [(json.loads(i["msg"]["S"]), int(i["tokens"]["N"])) for i in resp["Items"]]


def fitting(newest_first: list[tuple[dict, int]], budget: int, max_messages: int) -> list[dict]:
    """The newest messages whose tokens fit ``budget``, oldest first."""
    kept, used = [], 0
    for body, tokens in newest_first[:max_messages]:
        if used + tokens > budget:
            break
        kept.append(body)
        used += tokens
    return kept[::-1]


def turn_cost(gw, conversation_id: str, text: str, **extra) -> tuple[int, int, list[dict]]:
    """(Query calls, items read, messages sent upstream) of one turn."""
    queries = count_calls(gw.services.conversations.client, ("Query",))
    r = gw.post("/v1/chat/completions", chat(text, conversation_id, **extra))
    assert r.status_code == 200, r.text
    return queries.attempted.get("Query", 0), queries.scanned, gw.upstream_calls()[-1]["messages"]


def test_a_turn_reads_only_its_history_budget_however_long_the_conversation(long_aws):
    convs = long_aws.conversations
    with mocked_upstream() as mock:
        gw = make_gateway(long_aws)  # defaults: 200 messages / 8,000 tokens of history
        gw.upstream = mock
        budget = gw.services.routing.resolve("default").history_max_messages
        assert budget == 200
        costs = {name: turn_cost(gw, convs[name], f"question for {name}") for name in ("short", "medium", "long")}

    long_queries, long_read, long_sent = costs["long"]
    medium_queries, medium_read, _ = costs["medium"]
    short_queries, short_read, short_sent = costs["short"]
    # Message 10,000 costs what message 300 costs: the same Query calls, the same items read.
    assert long_read == medium_read == budget
    assert long_queries == medium_queries <= 5
    assert short_read == SHORT and short_queries == 1  # a short conversation reads all it has
    # what went upstream: the system prompt, the newest 200 messages in order, the new message
    assert long_sent[0] == {"role": "system", "content": SYSTEM}
    assert long_sent[1:-1] == [generated(i) for i in range(LONG - budget, LONG)]
    assert long_sent[-1] == {"role": "user", "content": "question for long"}
    assert short_sent[1:-1] == [generated(i) for i in range(SHORT)]


def test_trimming_keeps_the_system_prompt_and_the_newest_messages_that_fit(long_aws):
    convs = long_aws.conversations
    with mocked_upstream() as mock:
        gw = make_gateway(long_aws, history_max_tokens=300)
        gw.upstream = mock
        newest = newest_stored(long_aws, convs["long"], 400)
        expected = fitting(newest, 300, 200)
        # the boundary: what was kept fits, one more (older) message would not
        kept_tokens = sum(tokens for _, tokens in newest[: len(expected)])
        assert kept_tokens <= 300 < kept_tokens + newest[len(expected)][1]
        long_queries, long_read, sent = turn_cost(gw, convs["long"], "short budget")
        medium_queries, medium_read, _ = turn_cost(gw, convs["medium"], "short budget")

    assert 5 < len(expected) < 200  # the token budget, not the message budget, is what binds here
    assert sent == [{"role": "system", "content": SYSTEM}, *expected, {"role": "user", "content": "short budget"}]
    # a token-bound turn reads a bounded number of items too, the same at 10,000 as at 300
    assert (long_queries, long_read) == (medium_queries, medium_read)
    assert long_read <= 200  # never more than the message budget


def test_history_fits_the_context_window_minus_max_tokens(long_aws):
    """The hard cap: context window - max_tokens, even when the history budget allows more."""
    conv = long_aws.conversations["long"]
    window, max_tokens = 1_200, 1_000
    with mocked_upstream() as mock:
        gw = make_gateway(long_aws, default_context_window=window)
        gw.upstream = mock
        question = {"role": "user", "content": "capped by the window"}
        fixed = count_message({"role": "system", "content": SYSTEM}) + count_message(question)
        room = window - max_tokens - fixed - TOKENS_PER_REPLY
        newest = newest_stored(long_aws, conv, 400)
        expected = fitting(newest, room, 200)
        kept_tokens = sum(tokens for _, tokens in newest[: len(expected)])
        assert kept_tokens <= room < kept_tokens + newest[len(expected)][1]
        _, _, sent = turn_cost(gw, conv, question["content"], max_tokens=max_tokens)

        assert 0 < len(expected) < 200
        assert sent == [{"role": "system", "content": SYSTEM}, *expected, question]
        # the prompt as the gateway counts it (stored counts for history) fits the hard cap
        prompt = fixed + kept_tokens + TOKENS_PER_REPLY
        assert prompt <= window - max_tokens

        # new messages that alone exceed the window minus max_tokens are refused, not truncated
        r = gw.post("/v1/chat/completions", chat("word " * 400, conv, max_tokens=max_tokens))
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


# --------------------------------------------------------------------------- item sizes


def item_size(item: dict) -> int:
    """DynamoDB's item size: attribute names plus values (strings as UTF-8, numbers ~ digits/2+1)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        ((kind, raw),) = value.items()
        if kind == "S":
            size += len(raw.encode())
        elif kind == "N":
            size += len(raw.lstrip("-").replace(".", "")) // 2 + 1
        elif kind == "BOOL":
            size += 1
        else:
            size += len(json.dumps(raw).encode())
    return size


def largest_item(gw) -> int:
    from tests.integration.conftest import table_snapshot

    return max(item_size(i) for i in table_snapshot(gw.services.conversations.client, gw.aws.res.table_name))


def max_size(role: str, limit: int, char: str) -> dict:
    """A message that is (within a character) ``limit`` bytes as the gateway measures it (UTF-8 JSON)."""
    overhead = len(json.dumps({"role": role, "content": ""}, ensure_ascii=False).encode())
    return {"role": role, "content": char * ((limit - overhead) // len(char.encode()))}


@pytest.mark.parametrize("char", ["a", "é", "中", "😀"], ids=["ascii", "latin", "cjk", "emoji"])
def test_max_size_messages_are_stored_far_below_the_item_limit(gateway, char):
    gateway = regateway(gateway, default_context_window=1_000_000)  # a large-window model
    limit = gateway.services.settings.max_message_bytes
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    system, big = max_size("system", limit, char), max_size("user", limit, char)
    r = gateway.post("/v1/chat/completions", {"model": "default", "conversation_id": conv, "messages": [system, big]})
    assert r.status_code == 200, r.text[:300]
    got = gateway.get(f"/v1/conversations/{conv}").json()
    assert got["system"] == system["content"]
    assert conversation_messages(gateway, conv)[0]["content"] == big["content"]  # stored whole, not truncated
    # head (with the system prompt), the user message and the (echoing) reply: each one item,
    # each about the message limit (256 KB), none near 400 KB
    assert largest_item(gateway) < 0.7 * ITEM_LIMIT


def test_leading_system_messages_over_the_limit_together_are_refused_before_any_write(gateway):
    limit = gateway.services.settings.max_message_bytes
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    writes = count_calls(
        gateway.services.conversations.client,
        ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"),
    )
    half = max_size("system", limit, "a")
    r = gateway.post(
        "/v1/chat/completions",
        {"model": "default", "conversation_id": conv, "messages": [half, half, {"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["param"] == "messages"
    assert writes.total() == 0 and gateway.upstream_calls() == []


def test_conversation_system_and_metadata_are_bounded(gateway):
    limit = gateway.services.settings.max_message_bytes
    r = gateway.post("/v1/conversations", {"system": "s" * (limit + 1)})
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["param"] == "system"
    r = gateway.post("/v1/conversations", {"metadata": {"k": "v" * 513}})
    assert r.status_code == 400
    r = gateway.post("/v1/conversations", {"metadata": {"k" * 65: "v"}})
    assert r.status_code == 400
    r = gateway.post("/v1/conversations", {"metadata": {f"k{i}": "v" for i in range(17)}})
    assert r.status_code == 400
    assert gateway.get("/v1/conversations").json()["data"] == []
    ok = gateway.post("/v1/conversations", {"system": "s" * 1000, "metadata": {"k" * 64: "v" * 512}})
    assert ok.status_code == 200
