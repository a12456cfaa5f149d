"""moto's server, with DynamoDB requests applied one at a time.

DynamoDB applies each request to an item atomically: a conditional write checks and writes
in one step, and a transaction is all-or-nothing. moto's server handles requests on many
threads and does neither under concurrency (an UpdateItem's condition check and its write
can interleave with another request's; a failed TransactWriteItems restores a copy of the
whole table taken when it started, undoing other requests' writes made meanwhile). The
gateway's concurrency guarantees rest on those DynamoDB semantics, so this runs moto's own
WSGI app with one lock around DynamoDB requests only: other services (SQS long polls
especially) stay concurrent.

In this process moto's DynamoDB models are also patched (``local/moto_fast.py``) so a Query
costs O(limit) and a transaction O(items written), as on DynamoDB.

DynamoDB connections are kept alive (:func:`keep_alive_handler`), as DynamoDB keeps them;
werkzeug's own server closes every connection after one request.

With a data folder (``python local/moto_atomic.py HOST PORT DATA_DIR``) the state is kept on
disk and restored at startup (``local/moto_persist.py``).

Run as a script (``python local/moto_atomic.py HOST PORT``); ``MotoServer`` does.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from pathlib import Path


def serialize_dynamodb(app, lock: threading.Lock | None = None, persistence=None):
    lock = lock or threading.Lock()

    def wrapped(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            # Read the whole body before taking the lock: a client that stalls mid-body (a
            # partitioned link) must not hold every other DynamoDB request behind it. moto reads
            # the body again, so it gets a copy; the journal keeps the same bytes.
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            with lock:
                # consume the whole response inside the lock: moto may answer lazily
                response = [b"".join(app(environ, start_response))]
                if persistence is not None:
                    persistence.after_dynamodb(target.split(".", 1)[-1], body)
                return response
        if persistence is not None and not environ.get("PATH_INFO", "").startswith("/moto-api"):
            persistence.touched_other("sqs")
            persistence.touched_other("kms")
        return app(environ, start_response)

    return wrapped


KEEP_ALIVE_IDLE_SECONDS = 60.0  # an idle kept-alive connection is closed by the server after this


def keep_alive_handler(base):
    """``base`` (moto's werkzeug request handler) keeping DynamoDB connections alive, as DynamoDB does.

    werkzeug's development server answers every request with ``Connection: close`` (it cannot tell
    where an unread body ends, so it drains the socket after each response), which made every
    DynamoDB call from the gateway open a new TCP connection here — client-side work a real
    DynamoDB endpoint does not cost (it keeps connections alive), counted in the benches' gateway
    CPU. A DynamoDB request is read whole by :func:`serialize_dynamodb` before moto sees it, so
    for those (HTTP/1.1, a ``Content-Length`` body, no ``Expect``) this handler writes the
    response itself with its length and keeps the connection; every other request (SQS long
    polls, KMS, moto's API) goes through werkzeug as before and closes its connection.
    """

    class KeepAliveHandler(base):
        protocol_version = "HTTP/1.1"
        timeout = KEEP_ALIVE_IDLE_SECONDS  # socket reads: an idle connection's thread ends after this

        def _keeps_alive(self) -> bool:
            headers = self.headers
            return (
                self.request_version == "HTTP/1.1"
                and not self.close_connection
                and headers.get("X-Amz-Target", "").startswith("DynamoDB_")
                and headers.get("Content-Length", "").isdigit()
                and "Transfer-Encoding" not in headers
                and "Expect" not in headers
            )

        def run_wsgi(self) -> None:
            if not self._keeps_alive():
                super().run_wsgi()
                return
            self.environ = environ = self.make_environ()
            started: list = []

            def start_response(status, headers, exc_info=None):
                started[:] = [status, headers]
                return lambda data: None  # moto returns its body; nothing writes through this

            try:
                body = b"".join(self.server.app(environ, start_response))
            except Exception as exc:  # werkzeug's own answer to an app that raised, then close
                self.close_connection = True
                self.server.log("error", f"Error on request: {exc!r}")
                self.send_error(500)
                return
            status, headers = started
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            for key, value in headers:
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            # the head and the body in one write: as two small writes, the second would wait for
            # the client's delayed ACK of the first (Nagle), ~40 ms per request on loopback
            self._headers_buffer.extend((b"\r\n", body))
            self.flush_headers()

    return KeepAliveHandler


def main(host: str, port: int, data_dir: str | None = None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: make `local` importable
    from local import moto_fast

    moto_fast.install()
    lock, persistence = threading.Lock(), None
    if data_dir:
        from local.moto_persist import Persistence

        persistence = Persistence(data_dir, lock)
        persistence.restore()

        def stop(*_: object) -> None:
            persistence.flush()
            os._exit(0)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        persistence.run_flusher(on_orphaned=stop)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        host,
        port,
        serialize_dynamodb(app, lock, persistence),
        threaded=True,
        request_handler=keep_alive_handler(MotoRequestHandler),
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
