"""Start-up of the API process: the heap settled once (no full-GC stall later), warm-up off the first request."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

from llm_gateway.chat import tokens
from llm_gateway.runtime import GC_THRESHOLDS, warm_up

ROOT = Path(__file__).resolve().parents[2]


def python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("layers/common", "functions/api"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_settle_heap_freezes_the_start_up_heap_and_raises_the_young_threshold():
    out = python(
        "import gc; from llm_gateway.runtime import settle_heap; gc.disable(); settle_heap(); "
        "print(gc.isenabled(), gc.get_freeze_count() > 1000, gc.get_threshold())"
    )
    assert out == f"True True {GC_THRESHOLDS}"


def test_importing_the_app_leaves_the_collector_on_with_the_import_heap_frozen():
    # the collector pauses only while app.py's imports run, and their objects are frozen before it
    # resumes: its first collections (while the services are built) must not walk them (or promote
    # them, to walk them again in generation 1): 0.1-0.3 s on the cold start's path, measured
    assert python("import gc, app; print(gc.isenabled(), gc.get_freeze_count() > 10_000)") == "True True"


class Keys:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.got, self.lookups = fail, [], []

    def get(self, ref: str) -> str:
        self.got.append(ref)
        if self.fail:
            raise RuntimeError("KMS unavailable")
        return "plaintext"

    def lookup(self, key: str) -> None:
        self.lookups.append(key)


def services(keys: Keys) -> SimpleNamespace:
    routing = SimpleNamespace(key_refs=lambda: {"default", "other"})
    return SimpleNamespace(routing=routing, keys=keys, auth=SimpleNamespace(keys=keys))


def test_warm_up_decrypts_every_key_reads_dynamodb_once_and_loads_the_encoding(monkeypatch):
    loaded = threading.Event()
    monkeypatch.setattr(tokens, "_get_encoding", loaded.set)
    keys = Keys()
    thread = warm_up(services(keys))  # type: ignore[arg-type]
    thread.join(10)
    assert thread.daemon and not thread.is_alive()
    assert sorted(keys.got) == ["default", "other"]
    assert keys.lookups == ["llm-gateway-warm-up"]  # a key nobody has: a read, never a write
    assert loaded.is_set()


def test_a_failing_warm_up_is_dropped_and_the_rest_still_runs(monkeypatch):
    loaded = threading.Event()
    monkeypatch.setattr(tokens, "_get_encoding", loaded.set)
    keys = Keys(fail=True)
    warm_up(services(keys)).join(10)  # type: ignore[arg-type]
    assert sorted(keys.got) == ["default", "other"] and loaded.is_set()


def test_default_clients_share_one_session_so_botocore_loads_its_data_files_once(monkeypatch):
    from llm_gateway import aws

    monkeypatch.setattr(aws, "_clients", {})
    monkeypatch.setattr(aws, "_session", [])
    dynamodb, kms = aws.client("dynamodb"), aws.client("kms")
    assert aws.client("dynamodb") is dynamodb and len(aws._session) == 1
    assert dynamodb._loader is kms._loader  # endpoint rules, partitions, retry config: read once
