"""The local stack's data survives Ctrl-C and a restart in the same data folder; RESET=1 empties it.

Two runs of ``python -m local.stack`` (what ``make dev`` runs) on the same ``LOCAL_DATA_DIR``:
a conversation with its messages, a key made with ``bin/llm-gateway-admin``, a finished job and a
dead-lettered message (the stack's dead-letter consumer parks it) waiting in the parked queue, and
the KMS key (the provider key's ciphertext made by
the first run still decrypts: the second run's turns reach the upstream) are all there after
the restart; a third run with ``RESET=1`` starts empty.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import boto3
import pytest
from openai import OpenAI

from local.resources import free_port
from tests.e2e.conftest import API_KEY, ROOT, stack_env, wait_healthy

pytestmark = pytest.mark.timeout(300)


class Run:
    def __init__(self, data_dir, log, **extra: str) -> None:
        self.ports = free_port(), free_port(), free_port()
        self.env = {**stack_env(*self.ports), "LOCAL_DATA_DIR": str(data_dir), **extra}
        self.log = log
        self.base = f"http://127.0.0.1:{self.ports[0]}"
        self.moto = f"http://127.0.0.1:{self.ports[1]}"

    def __enter__(self) -> Run:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "local.stack"], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_healthy(self.base, self.proc, 60, self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)

    def client(self, key: str = API_KEY) -> OpenAI:
        return OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=30)

    def aws(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.moto,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def table(self) -> str:
        (name,) = self.aws("dynamodb").list_tables()["TableNames"]
        return name

    def queue(self, name: str) -> str:
        sqs = self.aws("sqs")
        (url,) = [u for u in sqs.list_queues()["QueueUrls"] if name in u]
        return url

    def dead_letter_queue(self) -> str:
        return self.queue("DeadLetter")

    def parked(self) -> list[str]:
        got = self.aws("sqs").receive_message(
            QueueUrl=self.queue("JobsParkedQueue"), WaitTimeSeconds=1, VisibilityTimeout=0
        )
        return [m["Body"] for m in got.get("Messages", [])]

    def admin(self, *args: str) -> str:
        env = {**self.env, "TABLE_NAME": self.table(), "AWS_ENDPOINT_URL": self.moto}
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
        out = subprocess.run(
            [str(ROOT / "bin" / "llm-gateway-admin"), *args], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout


def test_data_survives_restart_and_reset_empties_it(tmp_path):
    data, log = tmp_path / "data", tmp_path / "stack.log"
    with Run(data, log) as first:
        client = first.client()
        conv_id = client.conversations.create(metadata={"topic": "durable"}).id
        for text in ("one", "remember me"):
            client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": text}], extra_body={"conversation_id": conv_id}
            )
        acme_key = json.loads(first.admin("keys", "create", "--tenant", "acme"))["key"]
        job = client.post(
            "/jobs", body={"model": "default", "messages": [{"role": "user", "content": "j"}]}, cast_to=object
        )
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{job['id']}", cast_to=object)["status"] != "succeeded":
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.2)
        first.aws("sqs").send_message(QueueUrl=first.dead_letter_queue(), MessageBody="parked", MessageGroupId="g",
                                      MessageDeduplicationId="parked-1")  # fmt: skip
        deadline = time.monotonic() + 30
        while first.parked() != ["parked"]:  # the stack's dead-letter consumer moved it on
            assert time.monotonic() < deadline, "the dead letter was not parked"
        items_before = [i.id for i in client.conversations.items.list(conv_id, order="asc")]
    assert first.proc.returncode == 0
    assert len(items_before) == 4

    with Run(data, log) as second:
        client = second.client()
        assert [i.id for i in client.conversations.items.list(conv_id, order="asc")] == items_before
        assert client.conversations.retrieve(conv_id).metadata == {"topic": "durable"}
        assert client.get(f"/jobs/{job['id']}", cast_to=object)["status"] == "succeeded"
        assert second.client(acme_key).models.list().data  # the admin-made key still authenticates
        assert "acme" in second.admin("keys", "list", "--tenant", "acme")
        assert second.parked() == ["parked"]
        # the conversation continues: history from before the restart reaches the upstream
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "again"}], extra_body={"conversation_id": conv_id}
        )
        assert len(client.conversations.items.list(conv_id, order="asc").data) == len(items_before) + 2

    with Run(data, log, RESET="1") as third:
        client = third.client()
        with pytest.raises(Exception) as missing:
            client.conversations.retrieve(conv_id)
        assert getattr(missing.value, "status_code", None) == 404
        with pytest.raises(Exception) as unknown_key:
            third.client(acme_key).models.list()
        assert getattr(unknown_key.value, "status_code", None) == 401
        assert client.models.list().data  # the dev key is made afresh
