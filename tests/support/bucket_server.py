"""A tiny fake of NSD's public S3 bucket, serving the files under a folder on 127.0.0.1.

It answers like S3 answers anonymous GETs of a public bucket (what
``fmri_recon.data.nsd_bucket`` sends): ``HEAD`` and ``GET`` of ``/<key>``, with
``Content-Length``, ``ETag`` (the quoted hex MD5 of the object, as S3 gives single-part
uploads; keys in ``.multipart`` get a multipart-style ``"<hex>-2"`` instead, which is no
MD5 of the content), ``Last-Modified`` and ``Accept-Ranges: bytes``.  ``Range: bytes=N-``
(or ``N-M``) -> 206 with ``Content-Range: bytes N-M/total``, unless ``If-Range`` names
another ETag (or date) -> the whole object with 200, as S3 does.  A missing key -> 404
with S3's XML ``NoSuchKey`` body; a range past the end -> 416 ``InvalidRange``.

Usage::

    with FakeBucket(tmp_path / "bucket") as bucket:     # files at <root>/<key>
        download(key, dest, url=bucket.url)
        bucket.requests  # [(method, key, range header or None), ...]

or ``bucket = FakeBucket(root).start()`` ... ``bucket.stop()`` from a session fixture.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from local_server import LocalServer


class FakeBucket(LocalServer):
    def __init__(self, root: Path):
        super().__init__()
        self.root = Path(root)
        self.multipart: set[str] = set()    # keys served with an S3 multipart-style ETag
        self.requests: list[tuple[str, str, str | None]] = []
        self._served: dict[str, bytes] = {}  # bodies served instead of the real content
        self._cut_after: int | None = None
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------
    def cut_next_get(self, after_bytes: int) -> None:
        """Make the next GET of an object close the connection after ``after_bytes`` body bytes."""
        with self._lock:
            self._cut_after = after_bytes

    def serve_corrupted(self, key: str, body: bytes) -> None:
        """Serve ``body`` for ``key`` while the headers still describe the real file (give it the
        same length to get a complete answer with wrong bytes)."""
        self._served[key] = body

    def etag(self, key: str) -> str:
        """The ETag of ``key``, unquoted, as the bucket sends it."""
        md5 = hashlib.md5((self.root / key).read_bytes()).hexdigest()
        if key in self.multipart:   # S3: MD5 of the parts' MD5s, then "-<number of parts>"
            return hashlib.md5(bytes.fromhex(md5)).hexdigest() + "-2"
        return md5

    def gets(self, key: str | None = None) -> list[tuple[str, str, str | None]]:
        """The GET requests seen (of ``key`` only, if given)."""
        return [r for r in self.requests if r[0] == "GET" and (key is None or r[1] == key)]

    # -- request handling ------------------------------------------------------------
    def _handler_class(self):
        bucket = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like S3

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                bucket._handle(self, head=True)

            def do_GET(self):
                bucket._handle(self, head=False)

        return Handler

    def _path(self, key: str) -> Path | None:
        path = (self.root / key).resolve()
        inside = path.is_relative_to(self.root.resolve())
        return path if inside and key and path.is_file() else None

    def _send_xml_error(self, h: BaseHTTPRequestHandler, status: int, code: str, message: str, key: str,
                        extra: dict | None = None) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<Key>{key}</Key><RequestId>FAKE0123456789AB</RequestId></Error>").encode()
        h.send_response(status)
        for name, value in (extra or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":   # S3 sends no body for HEAD
            h.wfile.write(body)

    def _range(self, h: BaseHTTPRequestHandler, etag: str, modified: str, total: int) -> tuple[int, int] | None:
        """(first, last) byte asked for, or None for the whole object (no Range, or If-Range not matching)."""
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if not rng or (if_range is not None and if_range not in (etag, modified)):
            return None
        first, _, last = rng.strip().removeprefix("bytes=").partition("-")
        return int(first), min(int(last), total - 1) if last else total - 1

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        key = unquote(urlsplit(h.path).path).lstrip("/")
        self.requests.append((h.command, key, h.headers.get("Range")))
        path = self._path(key)
        if path is None:
            return self._send_xml_error(h, 404, "NoSuchKey", "The specified key does not exist.", key)

        content = path.read_bytes()
        body = self._served.get(key, content)
        total = len(content)
        etag = f'"{self.etag(key)}"'
        modified = formatdate(path.stat().st_mtime, usegmt=True)
        span = self._range(h, etag, modified, total)
        if span is not None and span[0] >= total:
            return self._send_xml_error(h, 416, "InvalidRange", "The requested range is not satisfiable", key,
                                        {"Content-Range": f"bytes */{total}"})
        start, end = span if span is not None else (0, total - 1)

        h.send_response(200 if span is None else 206)
        h.send_header("ETag", etag)
        h.send_header("Last-Modified", modified)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "binary/octet-stream")   # S3's default
        h.send_header("Content-Length", str(end - start + 1))
        if span is not None:
            h.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        h.end_headers()
        if head:
            return
        with self._lock:
            cut, self._cut_after = self._cut_after, None
        chunk = body[start:end + 1][:cut]
        h.wfile.write(chunk)
        if len(chunk) == end - start + 1:
            return
        # Cut (or a short corrupted body): close the connection cleanly (FIN, not RST) after
        # what was sent, so the client sees fewer bytes than Content-Length announced.
        h.wfile.flush()
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
