"""Pages that tell the truth (issue 13 item 2): DynamoDB ends a Query page at 1 MB, so six
~240 KB messages never fit one page. Every page walk over them — the items list in both orders at
every page size, the conversation itself, and the history a turn reads — returns all six, with
``has_more`` true until the last page.

The local stack's DynamoDB is moto, which cuts Query pages at 1 MB as DynamoDB does
(``moto.dynamodb.models.table.RESULT_SIZE_LIMIT``, kept by local/moto_fast.py's fast path); the
first test proves the limit is really met here, so the walks below are not vacuous.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import count_calls, make_gateway, mocked_upstream

SIZE = 240 * 1024
COUNT = 6


def big(i: int) -> str:
    # words, so token counting stays cheap and exact; each message distinct
    return (f"m{i} " + "lorem ipsum dolor sit amet " * (SIZE // 27))[:SIZE]


@pytest.fixture(scope="module")
def stack(moto_server):
    from tests.conftest import new_aws

    aws = new_aws(moto_server)
    with mocked_upstream() as mock:
        gw = make_gateway(aws, default_context_window=2_000_000, history_max_tokens=1_000_000)
        gw.upstream = mock
        conv = gw.post("/v1/conversations", {}).json()["id"]
        for i in range(COUNT):
            r = gw.post(
                f"/v1/conversations/{conv}/items",
                {"items": [{"type": "message", "role": "user" if i % 2 == 0 else "assistant", "content": big(i)}]},
            )
            assert r.status_code == 200, r.text[:300]
        yield gw, conv


def test_the_local_dynamodb_cuts_pages_at_1_mb(stack):
    gw, conv = stack
    client = gw.services.conversations.client
    pk = f"T#tenant-a#C#{conv}"
    resp = client.query(
        TableName=gw.aws.res.table_name,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :m)",
        ExpressionAttributeValues={":pk": {"S": pk}, ":m": {"S": "M#"}},
        Limit=100,
    )
    assert len(resp["Items"]) < COUNT and "LastEvaluatedKey" in resp


def walk(gw, conv, *, order: str, limit: int) -> list[dict]:
    pages: list[dict] = []
    after = None
    while True:
        params = {"order": order, "limit": limit} | ({"after": after} if after else {})
        r = gw.get(f"/v1/conversations/{conv}/items", params=params)
        assert r.status_code == 200, r.text[:300]
        pages.append(r.json())
        if not r.json()["has_more"]:
            return pages
        assert r.json()["data"], "has_more with an empty page"
        after = r.json()["last_id"]
        assert len(pages) <= COUNT + 1


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 4, 5, 6, 20, 100])
def test_every_item_page_walk_returns_all_six(stack, order, limit):
    gw, conv = stack
    queries = count_calls(gw.services.conversations.client, ("Query",))
    pages = walk(gw, conv, order=order, limit=limit)
    texts = [item["content"][0]["text"] for page in pages for item in page["data"]]
    expected = [big(i) for i in range(COUNT)]
    assert texts == (expected if order == "asc" else expected[::-1])
    assert [p["has_more"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert len(pages) == -(-COUNT // limit)  # no empty last page: has_more is exact
    if limit >= 4:  # a page of 4+ such messages (plus the look-ahead) spans DynamoDB pages
        assert queries.attempted["Query"] > len(pages)


def test_the_conversation_and_the_history_a_turn_reads_hold_all_six(stack):
    gw, conv = stack
    r = gw.get(f"/v1/conversations/{conv}")
    assert r.status_code == 200 and r.json()["id"] == conv
    r = gw.post(
        "/v1/chat/completions",
        {"model": "default", "conversation_id": conv, "messages": [{"role": "user", "content": "next"}]},
    )
    assert r.status_code == 200, r.text[:300]
    sent = gw.upstream_calls()[-1]["messages"]
    assert [m["content"] for m in sent[:-1]] == [big(i) for i in range(COUNT)]
    assert sent[-1]["content"] == "next"
