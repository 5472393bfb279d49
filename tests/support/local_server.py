"""What the tests' fake servers (hub_server.FakeHub, bucket_server.FakeBucket) share: an HTTP/1.1
server on 127.0.0.1 in a daemon thread, started and stopped by hand or as a context manager."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class LocalServer:
    """A subclass gives ``_handler_class()``: the request handler bound to it."""

    def __init__(self):
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler_class(self):
        raise NotImplementedError

    def start(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, f"{type(self).__name__} not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"
