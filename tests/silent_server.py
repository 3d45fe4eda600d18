"""A loopback TCP server that accepts connections and never answers, then heals.

It stands in for a Redis behind a network partition or on a frozen VM: the kernel
completes the TCP handshake, and nothing ever comes back. After :meth:`SilentServer.heal`
new connections are relayed to a real server, as when the partition ends; the connections
taken while it was silent stay silent until :meth:`close`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["SilentServer"]


class SilentServer:
    """Accepts on 127.0.0.1, answers nothing; :meth:`heal` relays later connections."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so that close() stops the accept loop
        self.port: int = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._target: int | None = None
        self._sockets: list[socket.socket] = []
        self._guard = threading.Lock()
        self._closed = threading.Event()
        #: How many connections were accepted while silent.
        self.silent_connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def heal(self, port: int) -> None:
        """Relay every later connection to ``127.0.0.1:port``."""
        self._target = port

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._guard:
                self._sockets.append(conn)
            if self._target is None:
                self.silent_connections += 1
                continue  # held, never read: the client's bytes sit in the kernel
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._guard:
                self._sockets.append(upstream)
            for source, sink in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        """Stop accepting and close every connection (a held client then sees EOF)."""
        self._closed.set()
        self._thread.join()
        self._listener.close()
        with self._guard:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
