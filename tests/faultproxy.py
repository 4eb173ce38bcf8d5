"""A TCP proxy for fault tests: it forwards a client's connection to Redis and, now and then, drops one
of the server's replies and resets that connection, as a flaky network or a failing load balancer does."""

from __future__ import annotations

import contextlib
import random
import socket
import threading


class FaultProxy:
    """Listens on 127.0.0.1:`port`; every reply is dropped (and its connection reset) with chance `drop`."""

    def __init__(self, upstream_port: int, drop: float, seed: int = 0) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.dropped = 0
        self.drop_next = 0  # replies to drop first, whatever `drop` says (a fault at the moment that hurts)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if replies and self._roll():
                    self.dropped += 1
                    break  # the reply is lost and the connection goes down with it
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def _roll(self) -> bool:
        with self._lock:
            if self.drop_next > 0:
                self.drop_next -= 1
                return True
            return self._rng.random() < self.drop

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for end in self._open:
                end.close()
