"""Where botocore's client-side CPU goes in a stateful turn, phase by phase (issue 16 item 3).

Turns through the gateway's ChatService on the local stack (moto server, fake upstream), the
stateful ones on conversations of a few turns each (as bench/request_path.py). Each phase is the
calling thread's own CPU (``time.thread_time()``: the fake upstream's and moto's threads and
processes are not counted) inside botocore's steps of ``_make_api_call`` on the conversation
store's DynamoDB client: the parameter events, endpoint ruleset resolution, building the request
(validation when on, JSON serialisation, the user agent), ``before-call``, creating the request
(SigV4 signing inside it), the HTTP exchange through urllib3 (CPU only: the wait for moto is not
CPU), parsing the response and the retry check; then the turn's other parts (the store methods
around their calls, the upstream call, the history and token work), and the stateful turn's
thread CPU against a stateless one's in the same run. Printed per call and per turn; nothing is
asserted. The wrappers cost a little themselves: compare rows within one run.

    .venv/bin/python bench/botocore_phases.py [--quick]
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections import Counter, defaultdict
from typing import Any

from _harness import quiet_stdout  # noqa: I001

QUICK = "--quick" in sys.argv
TENANT = "local-dev"
ALL = "_make_api_call (all of botocore)"


class Meter:
    """Thread CPU inside wrapped callables, on the measuring thread only (inclusive: rows nest)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.thread = threading.get_ident()

    def wrap(self, owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self.thread:
                return fn(*args, **kwargs)
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.thread_time() - started
                self.calls[label] += 1

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def instrument(meter: Meter, services: Any) -> list[str]:
    import botocore.httpsession
    import botocore.parsers

    from llm_gateway.chat import metering

    client = services.conversations.client
    rows = [
        (client, "_make_api_call", ALL),
        (client, "_emit_api_params", "  provide-client-params, before-parameter-build"),
        (client, "_resolve_endpoint_ruleset", "  endpoint ruleset resolution"),
        (client, "_convert_to_request_dict", "  request dict (validation, serialisation, user agent)"),
    ]
    serializer = client._serializer
    if hasattr(serializer, "_param_validator"):  # parameter validation on
        rows.append((serializer._param_validator, "validate", "    parameter validation"))
        serializer = serializer._serializer
    rows += [
        (serializer, "serialize_to_request", "    JSON serialisation"),
        (client._user_agent_creator, "to_string", "    user agent string"),
        (client.meta.events, "emit_until_response", "  before-call"),
        (client._endpoint, "create_request", "  create request (request-created: signing, ...)"),
        (client._request_signer, "sign", "    SigV4 signing"),
        (client._endpoint, "_do_get_response", "  send and parse"),
        (botocore.httpsession.URLLib3Session, "send", "    HTTP exchange via urllib3 (CPU only)"),
        (botocore.parsers.ResponseParser, "parse", "    response parsing"),
        (client._endpoint, "_needs_retry", "  needs-retry"),
        (services.conversations, "acquire_lease", "store: acquire_lease (with its call)"),
        (services.conversations, "commit_turn", "store: commit_turn (with its call)"),
        (services.conversations, "read_history", "store: read_history (with its calls)"),
        (services.chat, "prepare", "prepare (history budget, token counts)"),
        (services.chat.router, "complete", "upstream call"),
        (metering, "admit", "quota admit"),
    ]
    for owner, name, label in rows:
        meter.wrap(owner, name, label)
    return [label for _, _, label in rows]


def main() -> None:
    from local.stack import StackConfig, local_stack

    turns = 150 if QUICK else 600
    with quiet_stdout(), local_stack(StackConfig.from_env({"PORT": "0"})):
        from app import default_services
        from llm_gateway.chat.models import ChatCompletionRequest
        from llm_gateway.deadline import Deadline, bounded

        services = default_services()
        store = services.conversations
        convs = iter([c for c in [store.create(TENANT).id for _ in range(turns // 5 + 4)] for _ in range(5)])

        def turn(stateful: bool) -> None:
            request = ChatCompletionRequest(
                model="default",
                messages=[{"role": "user", "content": "Say something short."}],
                conversation_id=next(convs) if stateful else None,
            )
            deadline = Deadline.after(30)
            with bounded(deadline):
                services.chat.complete(TENANT, request, deadline)

        for _ in range(10):
            turn(True)
            turn(False)
        meter = Meter()
        labels = instrument(meter, services)
        cpu = {"stateful": 0.0, "stateless": 0.0}
        by_case: dict[str, tuple[dict[str, float], Counter[str]]] = {}
        for case in ("stateful", "stateless", "stateful", "stateless"):  # interleaved halves
            before = dict(meter.seconds), Counter(meter.calls)
            started = time.thread_time()
            for _ in range(turns // 2):
                turn(case == "stateful")
            cpu[case] += time.thread_time() - started
            seconds, calls = by_case.setdefault(case, (defaultdict(float), Counter()))
            for k, v in meter.seconds.items():
                seconds[k] += v - before[0].get(k, 0.0)
            for k, n in meter.calls.items():
                calls[k] += n - before[1].get(k, 0)
    seconds, calls = by_case["stateful"]
    api_calls = calls[ALL]
    print(f"== botocore and the rest of a stateful turn: {turns} turns, {api_calls / turns:.2f} DynamoDB calls/turn")
    print(f"  {'thread CPU (inclusive; indented rows are inside the row above)':58s} {'ms/call':>8s} {'ms/turn':>8s}")
    for label in labels:
        if label in seconds:
            per_call = f"{seconds[label] / api_calls * 1000:8.3f}" if label.startswith(" ") or label == ALL else " " * 8
            print(f"  {label:58s} {per_call} {seconds[label] / turns * 1000:8.3f}")
    stateful, stateless = cpu["stateful"] / turns, cpu["stateless"] / turns
    print(f"  {'stateful turn, thread CPU':58s} {'':8s} {stateful * 1000:8.3f}")
    print(f"  {'stateless turn, thread CPU':58s} {'':8s} {stateless * 1000:8.3f}")
    share = seconds[ALL] / turns / (stateful - stateless) if stateful > stateless else 0.0
    print(
        f"  stateful - stateless {(stateful - stateless) * 1000:+.3f} ms/turn, "
        f"botocore's share of it {share * 100:.0f}%   (bench/request_path.py's must: <= +2 ms of process CPU)"
    )


if __name__ == "__main__":
    main()
