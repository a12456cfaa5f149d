"""OpenAI's Conversations API through the official SDK's typed methods, against the local stack (issue 10).

Every body is re-validated with openai-python's own types, checking that no required field
(at any depth) was missing, so a renamed or dropped field fails here.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import openai
import pytest
from botocore.exceptions import ClientError
from openai import BaseModel as OpenAIModel
from openai.types.conversations import Conversation, ConversationDeletedResource, Message


def strict(obj: OpenAIModel) -> OpenAIModel:
    """``obj`` as the server sent it, validated by its SDK type, with every required field present."""
    parsed = type(obj).model_validate(obj.to_dict())
    _complete(parsed)
    return parsed


def _complete(model: OpenAIModel) -> None:
    missing = {n for n, f in type(model).model_fields.items() if f.is_required()} - model.model_fields_set
    assert not missing, (type(model).__name__, missing)
    for name in model.model_fields_set:
        value = getattr(model, name)
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, OpenAIModel):
                _complete(child)


def msg(text: str, role: str = "user") -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def text(item: Any) -> str:
    assert isinstance(item, Message)
    return item.content[0].text


def test_the_whole_api_with_typed_sdk_methods(client, fresh_upstream):
    conv = client.conversations.create(
        items=[msg("first"), msg("second", "assistant"), msg("third")], metadata={"topic": "e2e"}
    )
    assert isinstance(strict(conv), Conversation) and conv.metadata == {"topic": "e2e"}
    got = client.conversations.retrieve(conv.id)
    assert strict(got).id == conv.id and got.created_at == conv.created_at
    updated = client.conversations.update(conv.id, metadata={"topic": "renamed"})
    assert strict(updated).metadata == {"topic": "renamed"}

    added = client.conversations.items.create(conv.id, items=[msg(f"n{i}") for i in range(3, 20)])
    strict(added)
    assert [text(i) for i in added.data] == [f"n{i}" for i in range(3, 20)]
    for start in (20, 40):
        client.conversations.items.create(conv.id, items=[msg(f"n{i}") for i in range(start, min(start + 20, 45))])
    expected = ["first", "second", "third"] + [f"n{i}" for i in range(3, 45)]

    for order, want in (("asc", expected), ("desc", expected[::-1])):
        page = client.conversations.items.list(conv.id, limit=10, order=order)
        strict(page.data[0])
        walked = [text(item) for item in page]  # the SDK's auto-pagination, page after page
        assert walked == want and len(walked) == 45
        ids = [item.id for item in client.conversations.items.list(conv.id, limit=10, order=order)]
        assert len(set(ids)) == 45

    first = client.conversations.items.list(conv.id, limit=1, order="asc").data[0]
    one = client.conversations.items.retrieve(first.id, conversation_id=conv.id)
    assert strict(one).id == first.id and text(one) == "first"

    after_delete = client.conversations.items.delete(first.id, conversation_id=conv.id)
    assert isinstance(strict(after_delete), Conversation) and after_delete.id == conv.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(first.id, conversation_id=conv.id)
    # the next chat-completions turn no longer sends the deleted item upstream
    client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "next"}], extra_body={"conversation_id": conv.id}
    )
    sent = [m["content"] for m in fresh_upstream.upstream_requests()[-1]["body"]["messages"]]
    assert "first" not in sent and sent[:2] == ["second", "third"] and sent[-1] == "next"

    deleted = client.conversations.delete(conv.id)
    assert isinstance(strict(deleted), ConversationDeletedResource) and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conv.id)


def test_both_views_agree(client, fresh_upstream):
    conv = client.conversations.create()
    replies = []
    for turn in ("one", "two", "three"):
        r = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": turn}], extra_body={"conversation_id": conv.id}
        )
        replies.append(r.choices[0].message.content)
    items = list(client.conversations.items.list(conv.id, order="asc"))
    for item in items:
        strict(item)
    assert [(i.role, text(i)) for i in items] == [
        ("user", "one"),
        ("assistant", replies[0]),
        ("user", "two"),
        ("assistant", replies[1]),
        ("user", "three"),
        ("assistant", replies[2]),
    ]
    assert [i.content[0].type for i in items] == ["input_text", "output_text"] * 3

    client.conversations.items.create(conv.id, items=[msg("added A"), msg("added B")])
    client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "four"}], extra_body={"conversation_id": conv.id}
    )
    sent = fresh_upstream.upstream_requests()[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["one", replies[0], "two", replies[1], "three", replies[2]] + [
        "added A",
        "added B",
        "four",
    ]


def test_20_concurrent_items_create_each_accepted_once_and_contiguous_the_rest_409(client):
    conv = client.conversations.create()
    barrier = threading.Barrier(20)
    outcomes: dict[int, str] = {}
    lock = threading.Lock()

    def add(i: int) -> None:
        barrier.wait(10)
        try:
            client.conversations.items.create(conv.id, items=[msg(f"c{i}-a"), msg(f"c{i}-b")])
            result = "ok"
        except openai.ConflictError:
            result = "409"
        with lock:
            outcomes[i] = result

    threads = [threading.Thread(target=add, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 20 and set(outcomes.values()) <= {"ok", "409"}
    accepted = sorted(i for i, r in outcomes.items() if r == "ok")
    assert accepted
    stored = [text(i) for i in client.conversations.items.list(conv.id, order="asc", limit=100)]
    assert len(stored) == 2 * len(accepted)
    pairs = list(zip(stored[0::2], stored[1::2], strict=True))
    assert all(a.endswith("-a") and b == a[:-2] + "-b" for a, b in pairs)  # each call's items adjacent
    assert sorted(int(a[1:-2]) for a, _ in pairs) == accepted  # once each; no rejected call's item


def other_tenant(stack) -> openai.OpenAI:
    """A client holding a key of another tenant, created in the stack's table (moto) as an operator would."""
    import boto3

    from llm_gateway.security.api_keys import ApiKeyStore

    dynamodb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{stack.ports[1]}", region_name="us-east-1")
    (table,) = dynamodb.list_tables()["TableNames"]
    key = "sk-e2e-other-tenant"
    with contextlib.suppress(ClientError):  # created by an earlier test of this session
        ApiKeyStore(table, client=dynamodb).create("e2e-other", "isolation", key=key)
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30)


def test_isolation_and_bad_input(client, stack):
    other = other_tenant(stack)
    conv = client.conversations.create(items=[msg("mine")])
    item = client.conversations.items.list(conv.id).data[0]
    assert other.conversations.create().id != conv.id  # the other key works, on its own conversations
    for call in (
        lambda: other.conversations.retrieve(conv.id),
        lambda: other.conversations.update(conv.id, metadata={"x": "y"}),
        lambda: other.conversations.items.create(conv.id, items=[msg("intruder")]),
        lambda: other.conversations.items.list(conv.id),
        lambda: other.conversations.items.retrieve(item.id, conversation_id=conv.id),
        lambda: other.conversations.items.delete(item.id, conversation_id=conv.id),
        lambda: other.conversations.delete(conv.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    bad = [
        lambda: client.conversations.items.list(conv.id, order="sideways"),  # type: ignore[arg-type]
        lambda: client.conversations.items.list(conv.id, limit=0),
        lambda: client.conversations.items.list(conv.id, limit=101),
        lambda: client.conversations.items.list(conv.id, after="msg_forged"),
        lambda: client.conversations.items.create(conv.id, items=[msg("x")] * 21),
        lambda: client.conversations.items.create(conv.id, items=[{"type": "reasoning", "summary": []}]),
    ]
    for call in bad:
        with pytest.raises(openai.BadRequestError):
            call()
    assert [text(i) for i in client.conversations.items.list(conv.id)] == ["mine"]  # nothing was written
    assert strict(client.conversations.retrieve(conv.id)).metadata == {}
