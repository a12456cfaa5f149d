"""Provision the stack's AWS resources in moto from ``template.yaml`` itself.

The table, queues and KMS key are read from the template, so the local stack and
the tests cannot drift from what a deployment creates. Only the properties moto
needs are translated; intrinsic functions are resolved for the few shapes the
template uses (``!GetAtt X.Arn`` between resources, plain values).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


@dataclass
class LocalResources:
    table_name: str
    kms_key_id: str
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue url
    queue_arns: dict[str, str] = field(default_factory=dict)

    @property
    def jobs_queue_url(self) -> str:
        return self.queues.get("JobsQueue", "")

    @property
    def dead_letter_queue_url(self) -> str:
        return self.queues.get("JobsDeadLetterQueue", "")

    @property
    def parked_queue_url(self) -> str:
        return self.queues.get("JobsParkedQueue", "")


def _resources(template: dict, kind: str) -> dict[str, dict]:
    return {name: r.get("Properties", {}) for name, r in template["Resources"].items() if r["Type"] == kind}


def create_table(dynamodb: Any, name: str, props: dict) -> None:
    params: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        params["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    try:
        dynamodb.create_table(**params)
    except dynamodb.exceptions.ResourceInUseException:
        return  # restored from the local stack's data folder
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
        )


def provision(
    session: Any, endpoint_url: str, *, prefix: str = "llm-gateway-local", template: dict | None = None
) -> LocalResources:
    """Create the template's table, KMS key and queues in the moto server at ``endpoint_url``."""
    template = template or load_template()
    dynamodb, kms, sqs = (session.client(s, endpoint_url=endpoint_url) for s in ("dynamodb", "kms", "sqs"))

    tables = _resources(template, "AWS::DynamoDB::Table")
    ((table_logical, table_props),) = tables.items()
    table_name = f"{prefix}-{table_logical.lower()}"
    create_table(dynamodb, table_name, table_props)

    ((key_logical, key_props),) = _resources(template, "AWS::KMS::Key").items()
    alias = f"alias/{prefix}-provider-keys"
    existing = [a for a in kms.list_aliases()["Aliases"] if a["AliasName"] == alias and a.get("TargetKeyId")]
    if existing:  # restored: the same key, so stored ciphertexts still decrypt
        key_id = existing[0]["TargetKeyId"]
    else:
        key_id = kms.create_key(Description=f"{prefix} {key_logical}")["KeyMetadata"]["KeyId"]
        if _resources(template, "AWS::KMS::Alias"):
            kms.create_alias(AliasName=alias, TargetKeyId=key_id)

    out = LocalResources(table_name=table_name, kms_key_id=key_id)
    queues = _resources(template, "AWS::SQS::Queue")
    # Dead-letter queues before the queues whose redrive policies point at them (a DLQ may have one too).
    ordered: list[str] = []

    def add(logical: str) -> None:
        if logical in ordered:
            return
        redrive = queues[logical].get("RedrivePolicy")
        if redrive:
            add(redrive["deadLetterTargetArn"]["Fn::GetAtt"][0])
        ordered.append(logical)

    for logical in queues:
        add(logical)
    for logical in ordered:
        props = queues[logical]
        fifo = bool(props.get("FifoQueue"))
        name = f"{prefix}-{logical}" + (".fifo" if fifo else "")
        attributes: dict[str, str] = {}
        if fifo:
            attributes["FifoQueue"] = "true"
            attributes["ContentBasedDeduplication"] = str(bool(props.get("ContentBasedDeduplication"))).lower()
        for prop in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds"):
            if isinstance(props.get(prop), (int, str)):
                attributes[prop] = str(props[prop])
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": out.queue_arns[target], "maxReceiveCount": int(redrive["maxReceiveCount"])}
            )
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        out.queues[logical] = url
        out.queue_arns[logical] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    return out


def quiet_moto_logs() -> None:
    for name in ("werkzeug", "moto", "botocore.credentials"):
        logging.getLogger(name).setLevel(logging.ERROR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited across exec; Python keeps it ignored


class MotoServer:
    """moto in server mode, in its own process, on loopback.

    A separate process keeps its state apart from any in-process ``mock_aws`` and
    makes concurrent clients really concurrent.
    """

    def __init__(self, port: int = 0, data_dir: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir  # moto's state kept there across restarts (local/moto_persist.py)
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> MotoServer:
        self._proc = subprocess.Popen(
            # moto's server with DynamoDB requests applied one at a time, as DynamoDB applies them
            # atomically (see moto_atomic.py); run by path, so no PYTHONPATH is needed.
            [sys.executable, str(Path(__file__).with_name("moto_atomic.py")), "127.0.0.1", str(self.port)]
            + ([str(self.data_dir)] if self.data_dir else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Ctrl-C in a terminal signals the whole process group: moto must not die before the
            # API and the poller that still use it. The owner stops it (stop(): SIGTERM) last.
            preexec_fn=_ignore_sigint,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited early (port {self.port} in use?)")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("moto server did not start in time")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def boto_session(region: str = "us-east-1") -> Any:
    import boto3

    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
