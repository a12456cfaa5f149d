"""The local stack's data on disk: moto's DynamoDB, SQS and KMS state survive a restart.

Runs inside the moto server process (``moto_atomic.py``) when it is given a data folder:

* ``dynamodb.pickle``: moto's DynamoDB backends (tables, their settings and items), written at
  startup after the journal below is folded in;
* ``dynamodb.journal``: one JSON line per item a DynamoDB write touched (its new version, or
  null once deleted), appended by the request wrapper after each write and flushed to disk
  every second — O(items written), so a large table costs nothing per turn;
* ``sqs.pickle`` and ``kms.pickle``: moto's SQS (queues, queued and in-flight messages) and
  KMS (the key and its material, so stored ciphertexts still decrypt) backends, rewritten each
  second they changed (they are small).

A clean stop (SIGTERM, what ``make dev``'s Ctrl-C sends) or the parent process disappearing
flushes everything; a SIGKILL of the moto process loses at most the last second of writes.
"""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any

FLUSH_SECONDS = 1.0
_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "DescribeTable", "ListTables", "DescribeTimeToLive"}
_READS |= {"TransactGetItems", "ListTagsOfResource", "DescribeContinuousBackups", "DescribeEndpoints"}


def _picklable() -> None:
    """moto's SQS holds RLocks and its KMS keys hold cryptography key objects: pickle them by value."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    rlock = type(threading.RLock())
    copyreg.pickle(rlock, lambda _: (threading.RLock, ()))
    copyreg.pickle(type(threading.Lock()), lambda _: (threading.Lock, ()))

    def reduce_key(key):
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return _load_private_key, (der,)

    samples = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024),
        ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate(),
    )
    for sample in samples:  # the concrete (Rust) classes cryptography returns
        copyreg.pickle(type(sample), reduce_key)


def _load_private_key(der: bytes):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_der_private_key(der, None)


def _backends() -> dict[str, Any]:
    from moto.dynamodb.models import dynamodb_backends
    from moto.kms.models import kms_backends
    from moto.sqs.models import sqs_backends

    return {"dynamodb": dynamodb_backends, "sqs": sqs_backends, "kms": kms_backends}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _dump(backend_dict) -> bytes:
    for _ in range(5):  # SQS requests run concurrently: retry a pickle that met a resizing dict
        try:
            return pickle.dumps({a: dict(regions) for a, regions in backend_dict.items()})
        except RuntimeError:
            time.sleep(0.01)
    return pickle.dumps({a: dict(regions) for a, regions in backend_dict.items()})


def _load(backend_dict, data: bytes) -> None:
    for account, regions in pickle.loads(data).items():  # noqa: S301 - our own file, written by us
        for region, backend in regions.items():
            backend_dict[account][region] = backend


class Persistence:
    def __init__(self, folder: str | Path, dynamodb_lock: threading.Lock) -> None:
        _picklable()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = dynamodb_lock  # the wrapper's: held while DynamoDB state is read
        self.pending: list[str] = []
        self.dirty: set[str] = set()
        self.journal = self.folder / "dynamodb.journal"
        self.parent = os.getppid()
        self.flushing = threading.Lock()  # one flush at a time: journal lines stay in write order

    # ---- startup ----------------------------------------------------------------------------
    def restore(self) -> None:
        backends = _backends()
        for name in ("sqs", "kms"):
            path = self.folder / f"{name}.pickle"
            if path.exists():
                _load(backends[name], path.read_bytes())
        snapshot = self.folder / "dynamodb.pickle"
        if snapshot.exists():
            _load(backends["dynamodb"], snapshot.read_bytes())
        if self.journal.exists():
            with self.journal.open() as f:
                for line in f:
                    if line.endswith("\n"):  # a line cut by a crash is the write that was lost
                        self._apply(json.loads(line))
        self.snapshot_dynamodb()

    def _apply(self, entry: dict) -> None:
        from moto.dynamodb.models.dynamo_type import DynamoType, Item

        from local.moto_gsi import touched

        backend = _backends()["dynamodb"][entry["a"]][entry["r"]]
        table = backend.tables.get(entry["t"])
        if table is None:
            return
        hash_value = DynamoType(entry["k"][table.hash_key_attr])
        range_value = DynamoType(entry["k"][table.range_key_attr]) if table.range_key_attr else None
        if range_value is None:
            if entry["i"] is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = Item(hash_value, None, entry["i"])
        elif entry["i"] is None:
            part = table.items.get(hash_value)
            if part is not None:
                part.pop(range_value, None)
        else:
            table.items[hash_value][range_value] = Item(hash_value, range_value, entry["i"])
        touched(table, hash_value, range_value)  # the GSI index, if one was built already

    def snapshot_dynamodb(self) -> None:
        _write_atomic(self.folder / "dynamodb.pickle", _dump(_backends()["dynamodb"]))
        _write_atomic(self.journal, b"")

    # ---- while serving ----------------------------------------------------------------------
    def after_dynamodb(self, target: str, body: bytes) -> None:
        """Called by the wrapper inside the DynamoDB lock, after moto handled the request."""
        if target in _READS:
            return
        if target not in _WRITES:  # a table was created, changed or deleted: snapshot it all
            self.dirty.add("dynamodb")
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return
        for account, regions in list(_backends()["dynamodb"].items()):
            for region, backend in list(regions.items()):
                for table_name, key in _touched(target, request, backend):
                    table = backend.tables.get(table_name)
                    if table is None or not _complete(table, key):
                        continue
                    item = table.get_item(*_key_types(table, key))
                    state = item.to_json()["Attributes"] if item else None
                    entry = {"a": account, "r": region, "t": table_name, "k": key, "i": state}
                    self.pending.append(json.dumps(entry, separators=(",", ":")))

    def touched_other(self, service: str) -> None:
        self.dirty.add(service)

    def flush(self) -> None:
        with self.flushing:
            self._flush()

    def _flush(self) -> None:
        backends = _backends()
        with self.lock:
            lines, self.pending = self.pending, []
            if "dynamodb" in self.dirty:
                self.dirty.discard("dynamodb")
                self.snapshot_dynamodb()
                lines = []
        if lines:
            with self.journal.open("a") as f:
                f.write("\n".join(lines) + "\n")
                f.flush()
                os.fsync(f.fileno())
        for name in ("sqs", "kms"):
            if name in self.dirty:
                self.dirty.discard(name)
                _write_atomic(self.folder / f"{name}.pickle", _dump(backends[name]))

    def run_flusher(self, on_orphaned) -> threading.Thread:
        def loop() -> None:
            while True:
                time.sleep(FLUSH_SECONDS)
                try:
                    self.flush()
                except Exception as e:  # keep flushing: report, never stop
                    print(f"local data: flush failed: {e!r}", file=sys.stderr, flush=True)
                if os.getppid() != self.parent:  # the stack died without stopping us
                    on_orphaned()

        thread = threading.Thread(target=loop, name="moto-persist", daemon=True)
        thread.start()
        return thread


def _complete(table, key: dict) -> bool:
    return table.hash_key_attr in key and (table.range_key_attr is None or table.range_key_attr in key)


def _key_types(table, key: dict):
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_value = DynamoType(key[table.hash_key_attr])
    return hash_value, DynamoType(key[table.range_key_attr]) if table.range_key_attr else None


def _key_of(table, item: dict) -> dict:
    names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    return {n: item[n] for n in names if n in item}


def _touched(target: str, request: dict, backend) -> list[tuple[str, dict]]:
    """(table, key) of every item a write request may have changed."""

    def table(name):
        return backend.tables.get(name)

    out: list[tuple[str, dict]] = []
    if target == "PutItem" and table(request.get("TableName")):
        out.append((request["TableName"], _key_of(table(request["TableName"]), request.get("Item", {}))))
    elif target in ("UpdateItem", "DeleteItem"):
        out.append((request.get("TableName"), request.get("Key", {})))
    elif target == "BatchWriteItem":
        for name, writes in (request.get("RequestItems") or {}).items():
            for w in writes:
                if "PutRequest" in w and table(name):
                    out.append((name, _key_of(table(name), w["PutRequest"].get("Item", {}))))
                elif "DeleteRequest" in w:
                    out.append((name, w["DeleteRequest"].get("Key", {})))
    elif target == "TransactWriteItems":
        for entry in request.get("TransactItems") or []:
            for kind, op in entry.items():
                name = op.get("TableName")
                if kind == "Put" and table(name):
                    out.append((name, _key_of(table(name), op.get("Item", {}))))
                elif kind in ("Update", "Delete"):
                    out.append((name, op.get("Key", {})))
    return out
