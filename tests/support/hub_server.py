"""A tiny fake Hugging Face hub, serving files of one dataset repo on 127.0.0.1.

It answers what ``huggingface_hub.hf_hub_download(..., local_dir=...)`` asks in
huggingface_hub 2.4.0: ``HEAD`` then ``GET`` on
``/datasets/<repo_id>/resolve/<revision>/<filename>``, with the headers the real hub
sends for LFS files (``X-Repo-Commit``, ``ETag``/``X-Linked-Etag`` = quoted sha256,
``X-Linked-Size``, ``Content-Length``; files named in ``.non_lfs`` get a git blob
sha1 ETag instead, like small git-stored files) and ``Range: bytes=N-`` -> 206.  Errors carry
the ``X-Error-Code``/``X-Error-Message`` headers that ``hf_raise_for_status`` reads:

* missing file -> 404 ``EntryNotFound`` (client: ``RemoteEntryNotFoundError``);
* unknown revision -> 404 ``RevisionNotFound`` (client: ``RevisionNotFoundError``);
* ``require_token`` set and no ``Authorization`` header -> 401 ``GatedRepo``
  (client: ``GatedRepoError``), as the hub answers for a gated repo;
* ``require_token`` set and a wrong token -> 401 "Invalid credentials in
  Authorization header" (client: plain ``HfHubHTTPError`` with status 401);
* anything else -> 404 without error code, and recorded in ``.unknown``.

Usage::

    with FakeHub({"a/b.bin": data}) as hub:
        download_file(..., endpoint=hub.endpoint)
        hub.requests  # [(method, path, range header or None), ...]
"""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from local_server import LocalServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # 40 hex, like a git commit


class FakeHub(LocalServer):
    def __init__(self, files: dict[str, bytes], repo_id: str = "pscotti/mindeyev2", require_token: str | None = None):
        super().__init__()
        self.files = dict(files)
        self.repo_id = repo_id
        self.require_token = require_token
        self.commit = COMMIT
        # files served like small git-stored (non-LFS) files: ETag = git blob sha1, no X-Linked-*
        self.non_lfs: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        self.unknown: list[tuple[str, str]] = []
        self._served: dict[str, bytes] = {}  # bodies served instead of the real content
        self._cut_after: int | None = None
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------
    def cut_next_get(self, after_bytes: int) -> None:
        """Make the next GET of a file close the connection after ``after_bytes`` body bytes."""
        with self._lock:
            self._cut_after = after_bytes

    def serve_corrupted(self, filename: str, body: bytes) -> None:
        """Serve ``body`` for ``filename`` while the headers still describe the real content."""
        self._served[filename] = body

    def sha256(self, filename: str) -> str:
        return hashlib.sha256(self.files[filename]).hexdigest()

    def gets(self, filename: str | None = None) -> list[tuple[str, str, str | None]]:
        """The GET requests seen (of ``filename`` only, if given)."""
        return [r for r in self.requests if r[0] == "GET" and (filename is None or r[1].endswith("/" + filename))]

    @property
    def endpoint(self) -> str:
        """The hub's address, as HF_ENDPOINT takes it."""
        return self.url

    # -- request handling ------------------------------------------------------------
    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real hub

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

            def _other(self):
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                hub.unknown.append((self.command, self.path))
                hub._send_error(self, 404, None, "Not Found")

            do_POST = do_PUT = do_DELETE = do_OPTIONS = _other

        return Handler

    def _send_error(self, h: BaseHTTPRequestHandler, status: int, code: str | None, message: str) -> None:
        body = message.encode()
        h.send_response(status)
        if code:
            h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("X-Repo-Commit", self.commit)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        self.requests.append((h.command, h.path, h.headers.get("Range")))
        path = unquote(urlsplit(h.path).path)
        prefix = f"/datasets/{self.repo_id}/resolve/"
        if not path.startswith(prefix):
            self.unknown.append((h.command, h.path))
            return self._send_error(h, 404, None, "Not Found")
        revision, _, filename = path[len(prefix):].partition("/")

        if self.require_token is not None:
            auth = h.headers.get("Authorization")
            if auth is None:
                return self._send_error(
                    h, 401, "GatedRepo",
                    f"Access to dataset {self.repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in.",
                )
            if auth != f"Bearer {self.require_token}":
                return self._send_error(h, 401, None, "Invalid credentials in Authorization header")
        if revision not in ("main", self.commit):
            return self._send_error(h, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if filename not in self.files:
            return self._send_error(h, 404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"")

        content = self.files[filename]
        body = self._served.get(filename, content)
        sha = hashlib.sha256(content).hexdigest()
        total = len(body)
        start, end = 0, total - 1
        rng = h.headers.get("Range")
        status = 200
        if rng and not head:
            spec = rng.strip().removeprefix("bytes=")
            first, _, last = spec.partition("-")
            start = int(first)
            end = int(last) if last else total - 1
            if start >= total:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{total}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206

        h.send_response(status)
        h.send_header("X-Repo-Commit", self.commit)
        if filename in self.non_lfs:
            git_sha1 = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
            h.send_header("ETag", f'"{git_sha1}"')
        else:
            h.send_header("ETag", f'"{sha}"')
            h.send_header("X-Linked-Etag", f'"{sha}"')
            h.send_header("X-Linked-Size", str(len(content)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        h.end_headers()
        if head:
            return

        with self._lock:
            cut, self._cut_after = self._cut_after, None
        chunk = body[start:end + 1]
        if cut is None:
            h.wfile.write(chunk)
            return
        # Send part of the body, then close the connection cleanly (FIN, not RST):
        # the client sees fewer bytes than Content-Length announced.
        h.wfile.write(chunk[:cut])
        h.wfile.flush()
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
