def test_chat_roundtrip(gateway):
    r = gateway.post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo:Hi n=1"
    conv = gateway.post("/v1/conversations", {}).json()
    for i in range(3):
        r = gateway.post(
            "/v1/chat/completions",
            {"model": "default", "conversation_id": conv["id"], "messages": [{"role": "user", "content": f"t{i}"}]},
        )
        assert r.status_code == 200, r.text
    items = gateway.get(f"/v1/conversations/{conv['id']}/items").json()
    assert len(items["data"]) == 6 and items["has_more"] is False
