"""Storage that fails: Azurite on a folder of its own that can be paused, stopped and started
again, behind loopback TCP proxies that cut connections on demand (what a flaky network between
the app and Azure Storage does to a request in flight)."""
from __future__ import annotations

import os
import socket
import threading

from devhost.__main__ import azurite_connection_string, free_port, start_azurite, stop

_WRITES = (b"PUT ", b"POST ", b"DELETE ", b"PATCH ", b"MERGE ")


class CuttingProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream`. Armed, it cuts the next write requests
    (PUT, POST, DELETE, PATCH, MERGE) one of two ways:
    - `cut_answers(n)`: the request reaches storage whole and is carried out, and its answer is
      dropped with the connection (the write happened; the app cannot know);
    - `cut_requests(n)`: the connection closes halfway through sending the request (nothing
      happens in storage)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._answers_to_cut = 0
        self._requests_to_cut = 0
        self.cut = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_answers(self, n: int) -> None:
        with self._lock:
            self._answers_to_cut, self._requests_to_cut = n, 0

    def cut_requests(self, n: int) -> None:
        with self._lock:
            self._requests_to_cut, self._answers_to_cut = n, 0

    def calm(self) -> None:
        self.cut_answers(0)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()  # storage is down: so is the path to it
                continue
            link = _Link(self, client, server)
            threading.Thread(target=link.requests, daemon=True).start()
            threading.Thread(target=link.answers, daemon=True).start()

    def _take(self, kind: str) -> bool:
        with self._lock:
            left = getattr(self, kind)
            if left <= 0:
                return False
            setattr(self, kind, left - 1)
            self.cut += 1
            return True


class _Link:
    def __init__(self, proxy: CuttingProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.drop_answer = False

    def requests(self) -> None:
        while True:
            data = _recv(self.client)
            if not data:
                break
            if data.startswith(_WRITES):
                if self.proxy._take("_requests_to_cut"):
                    self.server.sendall(data[:max(1, len(data) // 2)])
                    break
                if self.proxy._take("_answers_to_cut"):
                    self.drop_answer = True
            try:
                self.server.sendall(data)
            except OSError:
                break
        self._close()

    def answers(self) -> None:
        while True:
            data = _recv(self.server)
            if not data:
                break
            if self.drop_answer:  # storage has done it; the app never hears
                break
            try:
                self.client.sendall(data)
            except OSError:
                break
        self._close()

    def _close(self) -> None:
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(1 << 16)
    except OSError:
        return b""


class FlakyStorage:
    """Azurite on a folder of its own, reached through cutting proxies."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.blob_port, self.table_port, self.queue_port = free_port(), free_port(), free_port()
        self.procs = self._start()
        self.proxies = [CuttingProxy(self.blob_port), CuttingProxy(self.table_port), CuttingProxy(self.queue_port)]

    @property
    def connection_string(self) -> str:
        blob, table, queue = self.proxies
        return azurite_connection_string(blob.port, table.port, queue_port=queue.port)

    def signal(self, sig: int) -> None:
        for p in self.procs:
            os.killpg(p.pid, sig)  # each azurite-* is a node script: its whole group

    def stop(self) -> None:
        stop(self.procs)

    def start(self) -> None:
        self.procs = self._start()

    def _start(self) -> list:
        return start_azurite(self.blob_port, self.table_port, queue_port=self.queue_port, location=self.folder)

    def cut_answers(self, n: int) -> None:
        for p in self.proxies:
            p.cut_answers(n)

    def cut_requests(self, n: int) -> None:
        for p in self.proxies:
            p.cut_requests(n)

    def calm(self) -> int:
        cut = sum(p.cut for p in self.proxies)
        for p in self.proxies:
            p.calm()
        return cut
