"""A loopback TCP proxy that can stop forwarding: a registry server "paused" as if SIGSTOPped
(connections are accepted, nothing is answered) without stopping the real server that other
processes share. Used by the outage tests and by ``scripts/reliability.py``."""

import socket
import threading


class PausableProxy:
    """Forwards 127.0.0.1:port to the PostgreSQL server; ``pause()`` freezes every byte."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.running = threading.Event()
        self.running.set()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self):
        self.running.clear()

    def resume(self):
        self.running.set()

    def close(self):
        self.running.set()
        for s in [self.server, *self.socks]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client):
        self.running.wait()
        upstream = socket.create_connection(self.target)
        self.socks += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.running.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
