"""Conversations API cost at 10,000 stored items vs 10: listing one page and adding items.

Against moto in server mode, through ConversationService (what the routes call). Printed as
ratios (10,000 / 10) of latency and of DynamoDB items read per call (ScannedCount of every
Query plus the items GetItem returns), the figure DynamoDB bills. Asserts nothing.

    .venv/bin/python bench/conversation_items.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from _harness import interleaved, summary  # noqa: I001

QUICK = "--quick" in sys.argv
TENANT = "bench"


def reads_counter(client: Any) -> list[int]:
    """Items DynamoDB read for ``client``'s calls (index 0), from the responses."""
    total = [0]

    def after(model: Any, parsed: dict, **_: Any) -> None:
        if model.name == "Query":
            total[0] += parsed.get("ScannedCount", 0)
        elif model.name == "GetItem" and "Item" in parsed:
            total[0] += 1

    client.meta.events.register("after-call.dynamodb.*", after)
    return total


def main() -> None:
    from llm_gateway.chat.conversations import ConversationService
    from llm_gateway.conversations.store import DynamoConversationStore, conversation_pk, message_sk
    from llm_gateway.runtime import build_services
    from llm_gateway.settings import Settings
    from local.resources import MotoServer, boto_session, provision

    with MotoServer() as moto:
        session = boto_session()
        resources = provision(session, moto.endpoint)
        ddb = session.client("dynamodb", endpoint_url=moto.endpoint)
        settings = Settings(table_name=resources.table_name, openai_base_url="http://127.0.0.1:9/v1")
        services = build_services(settings, dynamodb=ddb, kms=session.client("kms", endpoint_url=moto.endpoint))
        store: DynamoConversationStore = services.conversations
        service = ConversationService(store, services.chat)
        reads = reads_counter(ddb)

        def seed(count: int) -> str:
            conv = store.create(TENANT)
            pk = conversation_pk(TENANT, conv.id)
            puts = []
            for seq in range(count):
                role = "user" if seq % 2 == 0 else "assistant"
                body = {"role": role, "content": f"message number {seq} " + "lorem ipsum " * 8}
                item = {"PK": {"S": pk}, "SK": {"S": message_sk(seq)}, "msg": {"S": json.dumps(body)}}
                puts.append({"PutRequest": {"Item": item | {"tokens": {"N": "30"}, "created_at": {"N": "0"}}}})
            for i in range(0, len(puts), 25):
                ddb.batch_write_item(RequestItems={store.table: puts[i : i + 25]})
            ddb.update_item(
                TableName=store.table,
                Key={"PK": {"S": pk}, "SK": {"S": "META"}},
                UpdateExpression="SET message_count = :c",
                ExpressionAttributeValues={":c": {"N": str(count)}},
            )
            return conv.id

        big = 2_000 if QUICK else 10_000
        ids = {10: seed(10), big: seed(big)}
        middle = {n: service.list_items(TENANT, ids[n], limit=1, order="asc")["data"][0]["id"] for n in ids}
        counts: dict[str, list[int]] = {}

        def measured(name: str, fn: Any) -> Any:
            def run() -> None:
                before = reads[0]
                fn()
                counts.setdefault(name, []).append(reads[0] - before)

            return run

        cases = {}
        for n, cid in ids.items():
            cases[f"list desc @{n}"] = measured(f"list desc @{n}", lambda c=cid: service.list_items(TENANT, c, limit=5))
            cases[f"list asc after @{n}"] = measured(
                f"list asc after @{n}",
                lambda c=cid, a=middle[n]: service.list_items(TENANT, c, limit=5, order="asc", after=a),
            )
            items = [{"role": "user", "content": "added"}, {"role": "assistant", "content": "ok"}]
            cases[f"add 2 items @{n}"] = measured(
                f"add 2 items @{n}", lambda c=cid, i=items: service.add_items(TENANT, c, i)
            )
        samples = interleaved(cases, rounds=3 if QUICK else 5, per_round=10, warmup=3)

    print(f"\n== conversations API at {big:,} stored items vs 10 (moto server, ConversationService)")
    for name, values in samples.items():
        print(f"  {name:22s} {summary(values)}   items read per call {statistics.median(counts[name]):4.0f}")
    for op in ("list desc", "list asc after", "add 2 items"):
        small, large = f"{op} @10", f"{op} @{big}"
        latency = statistics.median(samples[large]) / statistics.median(samples[small])
        read_small, read_large = statistics.median(counts[small]), statistics.median(counts[large])
        read_ratio = f"{read_large / read_small:4.2f}x" if read_small else f"{read_large:.0f} vs {read_small:.0f}"
        print(f"  {op:15s} ratio {big:,} / 10: latency {latency:5.2f}x   items read {read_ratio}   (target: flat)")
    print("  note: a page reads limit + 2 messages at most (the one holding `after`, the page, one more),")
    print("        whatever the length; moto's own Query cost grows with the table, DynamoDB's does not.")


if __name__ == "__main__":
    main()
