"""The local stack's turn cost as its data grows, and the moto server's memory per item.

On DynamoDB a turn costs the same at message 10 and message 10,000, and with 100 or 100,000
items in the table; moto's own Query and TransactWriteItems grow with the table, which
local/moto_fast.py removes. Measured here on the local stack (moto server process, fake
upstream), a turn through the gateway's ChatService, printed as ratios (target <= 1.2x):

1. a turn at message 10 with ~100 items in the table vs the same with ~100,000 items (two moto
   servers, one table each, timed interleaved), and a conversation-list page (a GSI1 Query,
   local/moto_gsi.py) at both sizes;
2. a turn at message 10,000 vs a turn at message 10, in the same (large) table, and where the
   difference goes, phase by phase (bench/_turn_phases.py);
3. the moto server's RSS per item at both table sizes (memory proportional to the data);
4. restoring a 10,000-message conversation from the data folder (a restart of ``make dev``).

    make bench            # or: .venv/bin/python bench/local_turn_cost.py [--quick]
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path

from _harness import interleaved, quiet_stdout, summary  # noqa: I001
from _turn_phases import PARSE, Phases, median_phases, print_breakdown

QUICK = "--quick" in sys.argv
TENANT = "local-dev"


def moto_rss_mib(endpoint: str) -> float:
    """VmRSS of the moto server process serving ``endpoint`` (found by its command line)."""
    port = endpoint.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"moto_atomic.py") for part in cmd) and port.encode() in cmd:
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


class Seeder:
    def __init__(self, ddb, store) -> None:
        self.ddb, self.store, self.items = ddb, store, 0

    def conversation(self, count: int) -> str:
        from llm_gateway.conversations.store import conversation_pk, message_sk

        conv = self.store.create(TENANT)
        pk = conversation_pk(TENANT, conv.id)
        batch = []
        for seq in range(count):
            role = "user" if seq % 2 == 0 else "assistant"
            msg = json.dumps({"role": role, "content": f"message number {seq} " + "lorem ipsum " * 8})
            item = {"PK": {"S": pk}, "SK": {"S": message_sk(seq)}, "msg": {"S": msg}, "tokens": {"N": "30"}}
            batch.append({"PutRequest": {"Item": {**item, "created_at": {"N": "0"}}}})
            if len(batch) == 25:
                self.ddb.batch_write_item(RequestItems={self.store.table: batch})
                batch = []
        if batch:
            self.ddb.batch_write_item(RequestItems={self.store.table: batch})
        self.ddb.update_item(
            TableName=self.store.table,
            Key={"PK": {"S": pk}, "SK": {"S": "META"}},
            UpdateExpression="SET message_count = :c",
            ExpressionAttributeValues={":c": {"N": str(count)}},
        )
        self.items += count + 1
        return conv.id


def small_table_chat(services, endpoint: str):
    """A ChatService like ``services.chat`` whose conversations live on another moto server (the small
    table, timed beside the large one): the same DynamoDB client configuration, routing, upstream and
    quotas; only the conversation store's table differs."""
    from llm_gateway.aws.bounded import bound
    from llm_gateway.chat.service import ChatService
    from llm_gateway.conversations.cache import CachedConversationStore, HistoryCache
    from llm_gateway.conversations.store import DynamoConversationStore
    from local.resources import boto_session, provision

    session = boto_session()
    res = provision(session, endpoint)
    big = services.conversations
    assert res.table_name == big.table, (res.table_name, big.table)
    client = bound(session.client("dynamodb", endpoint_url=endpoint, config=big.client.meta.config))
    store = DynamoConversationStore(big.table, client=client, ttl_days=services.settings.conversation_ttl_days)
    chat = services.chat
    turns = CachedConversationStore(store, HistoryCache(services.settings.history_cache_bytes))
    return ChatService(turns, chat.routing, chat.router, chat.settings, chat.quotas), store


def main() -> None:
    import boto3

    from local.resources import MotoServer
    from local.stack import StackConfig, local_stack

    with local_stack(StackConfig.from_env({"PORT": "0"})) as env, MotoServer() as small_moto:
        from app import default_services
        from llm_gateway.chat.models import ChatCompletionRequest
        from llm_gateway.chat.service import TurnReport
        from llm_gateway.deadline import Deadline

        services = default_services()
        seeder = Seeder(boto3.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"]), services.conversations)
        small_chat, small_store = small_table_chat(services, small_moto.endpoint)
        small_seeder = Seeder(boto3.client("dynamodb", endpoint_url=small_moto.endpoint), small_store)
        rounds, per_round = (3, 5) if QUICK else (5, 10)
        reports: dict[str, list[TurnReport]] = {}
        phases = Phases(services)
        phases.watch(small_store.client)
        turn_phases: dict[str, list[dict[str, float]]] = {}

        def ddb_of(turn: dict[str, float]) -> float:
            return sum(v for k, v in turn.items() if k.startswith("DynamoDB"))

        cache = getattr(services.chat.store, "cache", None)  # conversations.cache (HISTORY_CACHE_BYTES=0: none)

        def turns_on(label: str, conv_ids: list[str], *, miss: bool = False, chat=None):
            """One turn per call, each on the next conversation of ``conv_ids`` (all of one length): the
            same model and the same one-line user message; only the conversation's length differs.
            ``miss``: the process's history cache forgets the conversation first, as on the first turn a
            process serves on it (a cold container, or another process served the last turn)."""
            queue = itertools.cycle(conv_ids)
            reports[label], turn_phases[label] = [], []
            service = chat or services.chat

            def run():
                report, before = TurnReport(), phases.snapshot()
                conversation_id = next(queue)
                if miss and cache is not None:
                    cache.drop(TENANT, conversation_id)
                req = ChatCompletionRequest(
                    model="default", messages=[{"role": "user", "content": "next"}], conversation_id=conversation_id
                )
                t0 = time.perf_counter()
                service.complete(TENANT, req, Deadline.after(30), report)
                turn_phases[label].append(Phases.turn(before, phases.snapshot(), time.perf_counter() - t0))
                reports[label].append(report)

            return run

        def prime(conv_ids: list[str], chat=None) -> None:
            """One untimed turn on each: the steady state of a conversation this process serves (its last
            turn was served here, so the history cache holds its window)."""
            for conversation_id in conv_ids:
                req = ChatCompletionRequest(
                    model="default", messages=[{"role": "user", "content": "next"}], conversation_id=conversation_id
                )
                (chat or services.chat).complete(TENANT, req, Deadline.after(30), TurnReport())

        def show(samples: dict) -> dict[str, float]:
            for label, values in samples.items():
                read = statistics.median(r.history_items_read for r in reports[label])
                hits = sum(r.history_cache_hit is True for r in reports[label])
                misses = sum(r.history_cache_hit is False for r in reports[label])
                ddb = statistics.median(ddb_of(t) for t in turn_phases[label]) * 1000
                parse = statistics.median(t.get(PARSE, 0.0) for t in turn_phases[label]) * 1000
                print(
                    f"  {label:28s} {summary(values)}   DynamoDB {ddb:6.2f} ms (botocore parse {parse:5.2f})   "
                    f"history items read {read:4.0f}   cache hit/miss {hits}/{misses}"
                )
            return {k: statistics.median(v) for k, v in samples.items()}

        # The small table is another moto server's, timed beside the large one (interleaved), so the two
        # cases share the machine's state: measured before and after seeding one table, the ratio moved
        # between 0.94x and 1.26x from run to run while each DynamoDB call timed alone stayed flat.
        small = [small_seeder.conversation(10) for _ in range(9)]  # ~100 items in its table
        rss_small, items_small = moto_rss_mib(small_moto.endpoint), small_seeder.items
        print(f"\n== 1. a turn at message 10: ~{items_small} vs ~100,000 items in the table (two moto servers)")

        def list_page(store):  # the conversation list: a GSI1 Query (local/moto_gsi.py)
            return lambda: store.list_conversations(TENANT, limit=5, after=None)

        label = f"10 msgs, {items_small} items"
        big_total = 20_000 if QUICK else 100_000
        long_len = 2_000 if QUICK else 10_000
        t = time.perf_counter()
        long_conv, budget_conv = seeder.conversation(long_len), seeder.conversation(400)
        while seeder.items < big_total:
            seeder.conversation(100)
        print(f"  (seeded {seeder.items:,} items in {time.perf_counter() - t:.1f} s)")
        rss_big = moto_rss_mib(env["AWS_ENDPOINT_URL"])
        fresh = [seeder.conversation(10) for _ in range(27)]
        fresh_miss = [seeder.conversation(10) for _ in range(27)]  # their own: the miss case forgets its conversations
        big_label, long_label = f"10 msgs, {seeder.items:,} items", f"{long_len:,} msgs, same table"
        big_miss, long_miss = "10 msgs, cache miss", f"{long_len:,} msgs, cache miss"
        budget_miss = "400 msgs, cache miss"
        cases = {
            label: turns_on(label, small, chat=small_chat),
            big_label: turns_on(big_label, fresh),
            "400 msgs, same table": turns_on("400 msgs, same table", [budget_conv]),
            long_label: turns_on(long_label, [long_conv]),
            big_miss: turns_on(big_miss, fresh_miss, miss=True),
            long_miss: turns_on(long_miss, [long_conv], miss=True),
            budget_miss: turns_on(budget_miss, [budget_conv], miss=True),
        }
        with quiet_stdout():
            prime(small, chat=small_chat)
            prime([*fresh, budget_conv, long_conv])
            # the hits interleaved among themselves, then the misses: a miss's 200-item Query leaves
            # moto's collector work that would otherwise land on the light turns it alternates with
            misses = (big_miss, long_miss, budget_miss)
            hits = {k: v for k, v in cases.items() if k not in misses}
            after = interleaved(hits, rounds, per_round, warmup=5)
            after.update(interleaved({k: cases[k] for k in misses}, rounds, per_round, warmup=5))
            lists = {"small": list_page(small_store), "large": list_page(services.conversations)}
            listed = {k: statistics.median(v) for k, v in interleaved(lists, rounds, per_round, warmup=5).items()}
            list_before, list_after = listed["small"], listed["large"]
        med = show(after)
        small_t, big_t, budget_t, long_t, big_miss_t, long_miss_t, budget_miss_t = (med[k] for k in after)
        ddb = {k: statistics.median(ddb_of(t) for t in v) for k, v in turn_phases.items()}
        small_d, big_d, budget_d, long_d, *_ = (ddb[k] for k in after)
        print(f"  table-size ratio  {seeder.items:,} / {items_small} items = {big_t / small_t:.2f}x latency, ", end="")
        print(f"{big_d / small_d:.2f}x DynamoDB time   (target <= 1.2x)")
        print(
            f"  conversation list page (5 of the tenant's, GSI1): {list_before * 1000:.2f} ms at {items_small} items, "
            f"{list_after * 1000:.2f} ms at {seeder.items:,} = {list_after / list_before:.2f}x"
        )
        print(f"\n== 2. a turn at message {long_len:,} vs message 10 (same table)")
        print("  (same model, same one-line user message; the fake's reply differs only in its 'messages seen' count)")
        print(
            f"  latency ratio       {long_len:,} / 10  = {long_t / big_t:.2f}x   (target <= 1.2x; p50 "
            f"{long_t * 1000:.1f} vs {big_t * 1000:.1f} ms)"
        )
        print(
            f"  latency ratio       {long_len:,} / 400 = {long_t / budget_t:.2f}x   (both send the 200-message budget)"
        )
        print(f"  DynamoDB time ratio {long_len:,} / 10  = {long_d / big_d:.2f}x")
        print(
            "  (the rows above are the steady state: this process served the conversation's last turn, so its"
            " history cache answers and no history is read)"
        )
        print(
            f"  cache miss (the first turn a process serves on a conversation): {long_len:,} / 10 = "
            f"{long_miss_t / big_miss_t:.2f}x (p50 {long_miss_t * 1000:.1f} vs {big_miss_t * 1000:.1f} ms); "
            f"a miss costs {(long_miss_t - long_t) * 1000:+.1f} ms at message {long_len:,}, "
            f"{(big_miss_t - big_t) * 1000:+.1f} ms at message 10"
        )
        print(
            f"  cache miss, the same 200-message window: {long_len:,} / 400 = {long_miss_t / budget_miss_t:.2f}x "
            "(a miss reads the window, 200 items at most: its cost is the window's, not the conversation's)"
        )
        print(
            f"\n  where the difference goes (the long turn reads and sends {reports[long_label][-1].history_messages}"
            f" history messages, the short one {reports[big_label][-1].history_messages}):"
        )
        print_breakdown("message 10", median_phases(turn_phases[big_label]), f"message {long_len:,}",
                        median_phases(turn_phases[long_label]))  # fmt: skip
        print("\n  the same, both on a cache miss:")
        print_breakdown("message 10", median_phases(turn_phases[big_miss]), f"message {long_len:,}",
                        median_phases(turn_phases[long_miss]))  # fmt: skip
        print("\n== 3. moto server memory")
        per_item = (rss_big - rss_small) * 1024 / max(1, seeder.items - items_small)
        print(f"  RSS {rss_small:.0f} MiB at {items_small} items, {rss_big:.0f} MiB at {seeder.items:,} items")
        print(f"  = {per_item:.2f} KiB per added item (each ~0.3 KiB of attributes; moto keeps Python objects)")
        print(f"  RSS after the turns: {moto_rss_mib(env['AWS_ENDPOINT_URL']):.0f} MiB (turns add no table copies)")


def restore() -> None:
    """Start moto on a data folder holding a 10,000-message conversation: time to first answer."""
    import tempfile

    from llm_gateway.conversations.store import DynamoConversationStore
    from local.resources import MotoServer, boto_session, provision

    count = 2_000 if QUICK else 10_000
    session = boto_session()
    with tempfile.TemporaryDirectory() as data:
        with MotoServer(data_dir=data) as moto:
            res = provision(session, moto.endpoint)
            ddb = session.client("dynamodb", endpoint_url=moto.endpoint)
            seeder = Seeder(ddb, DynamoConversationStore(res.table_name, client=ddb))
            seeder.conversation(count)
            time.sleep(1.5)  # one flush of the journal
        size = sum(f.stat().st_size for f in Path(data).iterdir()) / 2**20
        t = time.perf_counter()
        with MotoServer(data_dir=data) as moto:
            res = provision(session, moto.endpoint)
            ddb = session.client("dynamodb", endpoint_url=moto.endpoint)
            took = time.perf_counter() - t
            pages = ddb.get_paginator("scan").paginate(TableName=res.table_name, Select="COUNT")
            n = sum(page["Count"] for page in pages)
    print(f"\n== 4. restore: {count:,}-message conversation ({size:.1f} MiB on disk, journal before compaction)")
    print(f"  moto start + restore + provision: {took:.2f} s   ({n:,} items back)")


if __name__ == "__main__":
    main()
    restore()
