"""A TCP proxy on 127.0.0.1 in front of a local port, for tests of a bad link: its connections can be cut
(`cut`), the server -> client direction throttled (`rate` bytes/s) and paused (`pause`: a stalled link, nothing
closed). TLS passes through untouched."""
from __future__ import annotations

import socket
import threading
import time


class TcpProxy:
    CHUNK = 64 * 1024

    def __init__(self, target_port: int, rate: int | None = None) -> None:
        self.target_port = target_port
        self.rate = rate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.open = 0  # connections whose server side is still open
        self.moving = threading.Event()
        self.moving.set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        self.moving.clear()

    def resume(self) -> None:
        self.moving.set()

    def cut(self) -> None:
        """Close every connection (the client sees its link drop)."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            _shut(sock)
            sock.close()

    def close(self) -> None:
        self.moving.set()
        self.server.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
                self.open += 1
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(self.CHUNK):
                if from_server:
                    self.moving.wait()
                    if self.rate:
                        time.sleep(len(data) / self.rate)  # the bandwidth itself, not a synchronisation
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _shut(sock)
        if from_server:
            with self.lock:
                self.open -= 1


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
