"""Every paginated read follows DynamoDB's LastEvaluatedKey (issue 13 item 2).

DynamoDB ends a Query page at 1 MB whatever ``Limit`` asked, and says so only with
``LastEvaluatedKey``. Here the stores run on in-process moto behind :class:`ShortPages`, a
client whose Query pages hold at most ``page`` items (a LastEvaluatedKey when more remain) —
a 1 MB limit that bites at every page — and each paginated read must still return every item,
with ``has_more`` exact.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from llm_gateway.conversations.store import DynamoConversationStore, NewMessage
from llm_gateway.quotas.counters import DynamoCounterStore
from llm_gateway.security.api_keys import ApiKeyStore
from local.resources import _resources, create_table, load_template

TABLE = "pages-test"
TENANT = "tenant-a"


class ShortPages:
    """A DynamoDB client whose Query answers at most ``page`` items per call, as DynamoDB does
    when a page reaches 1 MB before ``Limit``; every other call goes to the real client."""

    def __init__(self, client: Any, page: int) -> None:
        self.client = client
        self.page = page
        self.queries = 0
        self.cut = 0  # pages that ended short of their Limit with a LastEvaluatedKey

    def query(self, **params: Any) -> dict[str, Any]:
        self.queries += 1
        asked = params.get("Limit")
        resp = self.client.query(**{**params, "Limit": min(asked or self.page, self.page)})
        if "LastEvaluatedKey" in resp and (asked is None or len(resp.get("Items", [])) < asked):
            self.cut += 1
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def dynamodb():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        (props,) = _resources(load_template(), "AWS::DynamoDB::Table").values()
        create_table(client, TABLE, props)
        yield client


def message(i: int) -> NewMessage:
    return NewMessage({"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}, 10)


def conversation(dynamodb: Any, count: int) -> str:
    return (
        DynamoConversationStore(TABLE, client=dynamodb).create(TENANT, messages=[message(i) for i in range(count)]).id
    )


@pytest.mark.parametrize("page", [1, 2, 3])
@pytest.mark.parametrize("limit", [1, 2, 4, 7, 20])
@pytest.mark.parametrize("descending", [False, True])
def test_message_pages_walk_every_message_with_exact_has_more(dynamodb, page, limit, descending):
    conv = conversation(dynamodb, 7)
    short = ShortPages(dynamodb, page)
    store = DynamoConversationStore(TABLE, client=short)
    seen: list[int] = []
    start: int | None = None
    while True:
        got, more = store.messages_page(TENANT, conv, start=start, descending=descending, limit=limit)
        seen += [m.seq for m in got]
        assert more == (len(seen) < 7), (seen, more)
        if not more:
            break
        start = got[-1].seq + (-1 if descending else 1)
    assert seen == (list(range(6, -1, -1)) if descending else list(range(7)))
    if page < limit + 1:  # the store asks limit + 1: a smaller page is cut short, and was followed
        assert short.cut > 0


@pytest.mark.parametrize("page", [1, 2, 5])
def test_history_reads_the_whole_budget_across_short_pages(dynamodb, page):
    conv = conversation(dynamodb, 7)
    store = DynamoConversationStore(TABLE, client=ShortPages(dynamodb, page))
    every = store.read_history(TENANT, conv, max_messages=100, max_tokens=10_000)
    assert [m.seq for m in every.messages] == list(range(7))
    by_count = store.read_history(TENANT, conv, max_messages=4, max_tokens=10_000)
    assert [m.seq for m in by_count.messages] == [3, 4, 5, 6]
    by_tokens = store.read_history(TENANT, conv, max_messages=100, max_tokens=55)  # 10 tokens each
    assert [m.seq for m in by_tokens.messages] == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("page", [1, 2])
@pytest.mark.parametrize("descending", [False, True])
def test_conversation_list_pages_walk_every_conversation(dynamodb, page, descending):
    made = {conversation(dynamodb, 0) for _ in range(5)}
    store = DynamoConversationStore(TABLE, client=ShortPages(dynamodb, page))
    seen: list[str] = []
    after = None
    while True:
        got, more = store.list_conversations(TENANT, limit=2, after=after, descending=descending)
        seen += [c.id for c in got]
        assert more == (len(seen) < 5)
        if not more:
            break
        after = got[-1].id
    assert set(seen) == made and len(seen) == 5


def test_delete_removes_every_item_across_short_pages(dynamodb):
    conv = conversation(dynamodb, 9)
    DynamoConversationStore(TABLE, client=ShortPages(dynamodb, 2)).delete(TENANT, conv)
    assert dynamodb.scan(TableName=TABLE)["Items"] == []


def test_counter_reads_follow_short_pages(dynamodb):
    for day in range(6):
        dynamodb.put_item(
            TableName=TABLE,
            Item={"PK": {"S": f"T#{TENANT}#Q"}, "SK": {"S": f"D#2026-01-0{day + 1}"}, "req": {"N": "1"}},
        )
    items = DynamoCounterStore(TABLE, client=ShortPages(dynamodb, 1)).query(
        f"T#{TENANT}#Q", "D#2026-01-01", "D#2026-01-09"
    )
    assert len(items) == 6


def test_key_list_follows_short_pages(dynamodb):
    keys = ApiKeyStore(TABLE, client=dynamodb)
    made = {keys.create(TENANT, f"k{i}")[1].key_id for i in range(5)}
    listed = ApiKeyStore(TABLE, client=ShortPages(dynamodb, 2)).list(TENANT)
    assert {k.key_id for k in listed} == made
