"""Jobs worker throughput, and POST /v1/jobs → succeeded on the local stack.

1. Worker throughput. The fake upstream answers every call after 200 ms. One worker invocation
   gets a batch of 10 independent jobs (10 message groups) straight from the moto FIFO queue;
   jobs/s over several batches, as a ratio to the ideal 10 / 0.2 s = 50 jobs/s (target ≥ 0.8).
   For contrast the same with WORKER_CONCURRENCY=1 (what a sequential FIFO processor does).
2. End to end on the local stack (moto, fake upstream, uvicorn, the SQS poller feeding the
   worker like the event source mapping): time from POST /v1/jobs to GET /v1/jobs/{id} reading
   ``succeeded``, against a synchronous POST /v1/chat/completions on the same stack.

Prints numbers and ratios; asserts nothing.

    make bench            # or: .venv/bin/python bench/worker_throughput.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from _harness import ThreadedUvicorn, quiet_stdout  # noqa: I001

QUICK = "--quick" in sys.argv
UPSTREAM_DELAY = 0.2
BATCH = 10


def worker_throughput(concurrency: int, batches: int) -> float:
    """jobs/s of single worker invocations over ``batches`` batches of 10 independent jobs."""
    from llm_gateway.jobs.worker import build_worker
    from llm_gateway.runtime import build_services
    from llm_gateway.security.provider_keys import encrypt_key
    from llm_gateway.settings import Settings
    from local.fake_upstream import FakeUpstream
    from local.poller import LambdaContext, SqsPoller, lambda_record
    from local.resources import MotoServer, boto_session, provision

    with MotoServer() as moto, FakeUpstream(api_key="sk-bench") as fake:
        session = boto_session()
        res = provision(session, moto.endpoint, prefix="bench")
        from botocore.config import Config

        def client(name: str):
            return session.client(name, endpoint_url=moto.endpoint, config=Config(max_pool_connections=64))

        kms, ddb, sqs = client("kms"), client("dynamodb"), client("sqs")
        settings = Settings(
            table_name=res.table_name,
            jobs_queue_url=res.jobs_queue_url,
            openai_base_url=fake.url,
            default_model="fake-model",
            worker_concurrency=concurrency,
            provider_key_ciphertext=encrypt_key("sk-bench", "default", res.kms_key_id, kms),
        )
        services = build_services(settings, dynamodb=ddb, kms=kms, sqs=sqs)
        worker = build_worker(services)
        poller = SqsPoller(sqs, res.jobs_queue_url, worker.handle, wait_seconds=1)

        def one_batch(n: int) -> float:
            body = {
                "requests": [
                    {"model": "default", "messages": [{"role": "user", "content": f"b{n} j{i}"}]} for i in range(BATCH)
                ]
            }
            services.jobs.submit("bench", body)
            messages = []
            while len(messages) < BATCH:
                messages += poller.receive(wait_seconds=1)
            fake.script(*[{"delay_first_byte": UPSTREAM_DELAY}] * BATCH)
            event = {"Records": [lambda_record(m, poller.queue_arn, "us-east-1") for m in messages]}
            started = time.perf_counter()
            response = worker.handle(event, LambdaContext("bench", 120))
            elapsed = time.perf_counter() - started
            assert response == {"batchItemFailures": []}, response
            return elapsed

        with quiet_stdout():
            one_batch(-1)  # warm-up: clients, connections, KMS decrypt
            times = [one_batch(n) for n in range(batches)]
        return BATCH * len(times) / sum(times)


def end_to_end(samples: int) -> tuple[list[float], list[float]]:
    import requests

    from llm_gateway.settings import get_settings
    from local.stack import StackConfig, local_stack

    os.environ["SHOW_METRICS"] = "1"  # measure the gateway as deployed: EMF metrics on
    config = StackConfig.from_env({"PORT": "0"})
    with local_stack(config) as env:
        del env
        get_settings.cache_clear()
        from app import create_app

        with ThreadedUvicorn(create_app()) as gw, quiet_stdout():
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {config.api_key}"
            body = {"model": "default", "messages": [{"role": "user", "content": "Say something short."}]}
            s.post(gw.url + "/v1/chat/completions", json=body).raise_for_status()  # warm-up
            sync, jobs = [], []
            for i in range(samples + 2):
                started = time.perf_counter()
                s.post(gw.url + "/v1/chat/completions", json=body).raise_for_status()
                if i >= 2:
                    sync.append(time.perf_counter() - started)
                started = time.perf_counter()
                job = s.post(gw.url + "/v1/jobs", json=body).json()
                while True:
                    status = s.get(f"{gw.url}/v1/jobs/{job['id']}").json()["status"]
                    if status in ("succeeded", "failed"):
                        break
                    time.sleep(0.005)
                if status != "succeeded":
                    raise RuntimeError(f"job {job['id']} {status}")
                if i >= 2:
                    jobs.append(time.perf_counter() - started)
            return sync, jobs


def main() -> None:
    global UPSTREAM_DELAY
    batches = 3 if QUICK else 10
    ideal = BATCH / UPSTREAM_DELAY
    concurrent = worker_throughput(concurrency=10, batches=batches)
    sequential = worker_throughput(concurrency=1, batches=2)
    delay, UPSTREAM_DELAY = UPSTREAM_DELAY, 0.0
    floor = BATCH / worker_throughput(concurrency=10, batches=batches)  # the same batch, upstream instant
    UPSTREAM_DELAY = delay
    print(
        f"worker throughput: {batches} invocations x {BATCH} independent jobs, upstream "
        f"{UPSTREAM_DELAY * 1000:.0f} ms per call, ideal {ideal:.0f} jobs/s"
    )
    print(f"  groups concurrent   {concurrent:6.1f} jobs/s   ratio to ideal {concurrent / ideal:.2f}   (target >= 0.8)")
    print(
        f"  groups sequential   {sequential:6.1f} jobs/s   ratio to ideal {sequential / ideal:.2f}"
        f"   (concurrent / sequential {concurrent / sequential:.1f}x)"
    )
    print(
        f"  floor: the same batch with an instant upstream takes {floor * 1000:.0f} ms (4 DynamoDB writes per job"
        " against one moto server process, serialised by its GIL)"
    )
    print(
        f"  batch time {BATCH / concurrent * 1000:.0f} ms = upstream {UPSTREAM_DELAY * 1000:.0f} ms + "
        f"{BATCH / concurrent * 1000 - UPSTREAM_DELAY * 1000:.0f} ms not overlapped with it"
    )

    sync, jobs = end_to_end(10 if QUICK else 30)
    p50_sync, p50_job = statistics.median(sync), statistics.median(jobs)
    print("end to end on the local stack (moto + fake upstream without delay + poller + worker)")
    print(f"  POST /v1/chat/completions        p50 {p50_sync * 1000:7.1f} ms   max {max(sync) * 1000:7.1f} ms")
    print(
        f"  POST /v1/jobs -> succeeded       p50 {p50_job * 1000:7.1f} ms   max {max(jobs) * 1000:7.1f} ms"
        f"   ratio to the synchronous turn: {p50_job / p50_sync:.1f}x"
    )


if __name__ == "__main__":
    main()
