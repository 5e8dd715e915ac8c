"""A loopback TCP proxy whose traffic a test can cut, blackhole, refuse and restore.

It sits between the service and a dependency (a private PostgreSQL cluster) so a test can make the dependency
unreachable without stopping it:

- ``blackhole()``: every connection, established or new, stops carrying data in both directions; new connections
  are accepted and never answered. To the client this is a peer that went silent — a partition, or a hung server.
  The kernel still acknowledges what the client sends (the proxy's socket receives it), so TCP keepalives and
  ``tcp_user_timeout`` cannot see this fault: only the client's own timeouts can.
- ``refuse()``: established connections are reset and the port is closed: connects fail with ECONNREFUSED, as for a
  server that is down.
- ``cut()``: established connections are reset; new ones pass.
- ``restore()``: traffic flows again; connections held by a blackhole resume where they stopped (as after a
  partition heals), unless their client gave up meanwhile.

One thread accepts; each connection has one thread moving bytes both ways.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from enum import Enum
from types import TracebackType

_POLL_SECONDS = 0.05
_CHUNK = 65536


class Mode(Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    REFUSE = "refuse"


def _reset(sock: socket.socket | None) -> None:
    """Close with an RST (SO_LINGER 0), as a dropped server or a reset by a middlebox does."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        _reset(self.client)
        _reset(self.upstream)


class TcpProxy:
    """``with TcpProxy(host, port) as proxy:`` → connect to ``proxy.host``:``proxy.port`` instead of the target."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self._mode = Mode.PASS
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self.accepted = 0

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if not link.closed.is_set())

    def start(self) -> None:
        self._listen()

    def close(self) -> None:
        self._stopping.set()
        self._flowing.set()
        self._unlisten()
        self._reset_all()

    def blackhole(self) -> None:
        self._mode = Mode.BLACKHOLE
        self._flowing.clear()

    def refuse(self) -> None:
        self._mode = Mode.REFUSE
        self._unlisten()
        self._reset_all()

    def cut(self) -> None:
        self._reset_all()

    def restore(self) -> None:
        if self._mode is Mode.REFUSE:
            self._listen()
        self._mode = Mode.PASS
        self._flowing.set()

    # -- internals --------------------------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))  # the same port again after refuse(), so clients keep their URL
        listener.listen(128)
        listener.settimeout(_POLL_SECONDS)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), name="tcp-proxy-accept", daemon=True)
        self._acceptor.start()

    def _unlisten(self) -> None:
        listener, acceptor = self._listener, self._acceptor
        self._listener, self._acceptor = None, None
        if listener is not None:
            listener.close()
        if acceptor is not None:
            acceptor.join(timeout=5)

    def _reset_all(self) -> None:
        with self._lock:
            links, self._links = set(self._links), set()
        for link in links:
            link.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener and not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setblocking(True)
            link = _Link(client)
            with self._lock:
                self._links.add(link)
                self.accepted += 1
            threading.Thread(target=self._carry, args=(link,), name="tcp-proxy-link", daemon=True).start()

    def _carry(self, link: _Link) -> None:
        try:
            # A connection accepted during a blackhole is held unanswered: the target is not even dialled.
            while not self._flowing.wait(_POLL_SECONDS):
                if link.closed.is_set():
                    return
            link.upstream = socket.create_connection(self.target, timeout=5)
            link.upstream.settimeout(None)
            ends = {link.client: link.upstream, link.upstream: link.client}
            while not link.closed.is_set():
                if not self._flowing.is_set():
                    self._flowing.wait(_POLL_SECONDS)
                    continue
                readable, _, _ = select.select(list(ends), [], [], _POLL_SECONDS)
                for source in readable:
                    data = source.recv(_CHUNK)
                    if not data:
                        return
                    ends[source].sendall(data)
        except OSError:
            return
        finally:
            link.close()
            with self._lock:
                self._links.discard(link)
