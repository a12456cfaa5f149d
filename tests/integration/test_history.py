"""Server-side history: what a turn sends upstream and what GET returns (issue 2, "History")."""

from __future__ import annotations

from tests.integration.conftest import chat, conversation_messages


def turn(gateway, conversation_id: str, *messages: dict) -> dict:
    r = gateway.post(
        "/v1/chat/completions", {"model": "default", "conversation_id": conversation_id, "messages": list(messages)}
    )
    assert r.status_code == 200, r.text
    assert r.json()["conversation_id"] == conversation_id
    return r.json()


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_third_turn_carries_turns_one_and_two_in_order_and_get_returns_all_six(gateway):
    conv = gateway.post("/v1/conversations", {}).json()
    replies = [
        turn(gateway, conv["id"], user(text))["choices"][0]["message"]["content"] for text in ("one", "two", "three")
    ]

    sent = gateway.upstream_calls()
    assert len(sent) == 3
    assert sent[0]["messages"] == [user("one")]
    assert sent[2]["messages"] == [
        user("one"),
        {"role": "assistant", "content": replies[0]},
        user("two"),
        {"role": "assistant", "content": replies[1]},
        user("three"),
    ]
    # the gateway's extension never reaches the upstream; the alias is resolved to the deployment model
    assert all("conversation_id" not in body and body["model"] == "gpt-test" for body in sent)

    got = gateway.get(f"/v1/conversations/{conv['id']}").json()
    assert [(m["role"], m["content"]) for m in conversation_messages(gateway, conv["id"])] == [
        ("user", "one"),
        ("assistant", replies[0]),
        ("user", "two"),
        ("assistant", replies[1]),
        ("user", "three"),
        ("assistant", replies[2]),
    ]
    assert got["message_count"] == 6
    # usage accumulates over the turns (the echo upstream reports 7 prompt tokens per message sent)
    assert got["usage"]["prompt_tokens"] == 7 * (1 + 3 + 5)
    assert got["usage"]["completion_tokens"] == 3 * 3


def test_items_paginate_with_limit_and_after(gateway):
    conv = gateway.post("/v1/conversations", {}).json()
    for text in ("one", "two", "three"):
        turn(gateway, conv["id"], user(text))
    url = f"/v1/conversations/{conv['id']}/items"

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": 2, "order": "asc"} | ({"after": after} if after else {})
        page = gateway.get(url, params=params).json()
        seen += [m["id"] for m in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert len(set(seen)) == 6 and pages == 3  # every item exactly once
    everything = gateway.get(url, params={"order": "asc"}).json()["data"]
    assert [m["id"] for m in everything] == seen  # in order

    # `after` is exclusive for every item id, the first included
    page = gateway.get(url, params={"after": seen[0], "limit": 1, "order": "asc"}).json()
    assert [m["id"] for m in page["data"]] == [seen[1]]
    assert page["has_more"] is True
    page = gateway.get(url, params={"after": seen[5], "order": "asc"}).json()
    assert page["data"] == [] and page["has_more"] is False and page["first_id"] is None

    for bad in ({"after": "msg_x"}, {"limit": 0}, {"limit": 101}):
        r = gateway.get(url, params=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_leading_system_message_becomes_the_conversation_prompt_and_goes_first(gateway):
    conv = gateway.post("/v1/conversations", {}).json()
    turn(gateway, conv["id"], {"role": "system", "content": "You are terse."}, user("one"))
    turn(gateway, conv["id"], user("two"))

    got = gateway.get(f"/v1/conversations/{conv['id']}").json()
    assert got["system"] == "You are terse."
    # the system prompt lives on the conversation, not among its items
    assert [m["role"] for m in conversation_messages(gateway, conv["id"])] == ["user", "assistant", "user", "assistant"]

    sent = gateway.upstream_calls()
    assert sent[0]["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent[1]["messages"][0] == {"role": "system", "content": "You are terse."}
    assert [m["role"] for m in sent[1]["messages"]] == ["system", "user", "assistant", "user"]

    # a later turn that leads with a system message replaces the prompt, still sent first once
    turn(gateway, conv["id"], {"role": "system", "content": "Now be verbose."}, user("three"))
    sent = gateway.upstream_calls()[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Now be verbose."}
    assert [m["role"] for m in sent].count("system") == 1
    assert gateway.get(f"/v1/conversations/{conv['id']}").json()["system"] == "Now be verbose."


def test_system_prompt_given_at_creation_is_sent_first(gateway):
    conv = gateway.post("/v1/conversations", {"system": "Answer in French."})
    assert conv.status_code == 200
    turn(gateway, conv.json()["id"], user("hello"))
    assert gateway.upstream_calls()[0]["messages"] == [
        {"role": "system", "content": "Answer in French."},
        user("hello"),
    ]


def test_stateless_request_stores_nothing_and_sends_only_its_messages(gateway):
    r = gateway.post("/v1/chat/completions", chat("alone"))
    assert r.status_code == 200 and "conversation_id" not in r.json()
    assert gateway.upstream_calls()[0]["messages"] == [user("alone")]
    assert gateway.get("/v1/conversations").json()["data"] == []
