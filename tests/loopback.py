"""Tiny HTTP servers on loopback for integration tests (a proxy, an upstream speaking some API), and
a TCP proxy that can be black-holed (a partition between the gateway and moto)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server on an ephemeral 127.0.0.1 port; run it with :func:`serving`."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def serving(*servers: LoopbackServer) -> Iterator[tuple[LoopbackServer, ...]]:
    """Serve each server in a daemon thread until the block ends."""
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield servers
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json") -> None:
    """A whole response with its Content-Length."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class TcpProxy:
    """A TCP proxy on an ephemeral 127.0.0.1 port in front of ``target`` (host, port) that can be
    black-holed: :meth:`blackhole` makes it stop forwarding — connections open and new ones are
    accepted, but no byte goes through in either direction (what a network partition looks like
    to a client: no refusal, no reset, just silence). :meth:`heal` forwards again on new
    connections; a connection that was black-holed stays dead (bytes were lost on it)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._generation = 0  # bumped by blackhole(); a connection forwards only in its own generation
        self._holed = False
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def blackhole(self) -> None:
        with self._lock:
            self._holed = True
            self._generation += 1

    def heal(self) -> None:
        """Forward again. The connections the partition hit are closed (as a peer that lost their state
        would reset them), so a client's pooled connection fails at once and it reconnects."""
        with self._lock:
            self._holed = False
            self._generation += 1
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _alive(self, generation: int) -> bool:
        with self._lock:
            return not self._holed and generation == self._generation

    def __enter__(self) -> TcpProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                generation = self._generation
                holed = self._holed
            upstream = None
            if not holed:
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
            with self._lock:
                self._sockets += [s for s in (client, upstream) if s is not None]
            threading.Thread(target=self._pump, args=(client, upstream, generation), daemon=True).start()
            if upstream is not None:
                threading.Thread(target=self._pump, args=(upstream, client, generation), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket | None, generation: int) -> None:
        """Copy ``source`` to ``sink`` while the connection's generation is alive; swallow it after."""
        try:
            while True:
                data = source.recv(65_536)
                if not data:
                    break
                if sink is not None and self._alive(generation):
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            if sink is not None and self._alive(generation):
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
