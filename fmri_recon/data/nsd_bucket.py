"""Resumable, checked download of single files of NSD's public S3 bucket over plain HTTPS.

NSD's manual ("How to get the data") serves every file by anonymous HTTPS GET of ``<BUCKET_URL>/<key>``,
e.g. ``nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.nii.gz``.  A file
is written to ``<dest>.part`` (the object's ETag in ``<dest>.part.etag``, so a later run resumes only bytes
of the same object version) and moved onto ``dest`` once its size, and for single-part uploads its MD5,
match what the bucket announced.

Why our own ~60 lines rather than a library: huggingface_hub (used in ``hub.py``) only speaks the
HF hub; boto3/s3fs would add credential handling and a large dependency for anonymous GETs; pooch
does not resume an interrupted download.  ``requests`` is imported inside the functions, because
the Snakefile imports this package and should stay light.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

from fmri_recon.helpers import DataError

log = logging.getLogger(__name__)

BUCKET_URL = "https://natural-scenes-dataset.s3.amazonaws.com"
HOW_TO_GET = "https://cvnlab.slite.page/p/dC~rBTjqjb/How-to-get-the-data"
RETRY_WAIT_S = 2.0      # pause before a retry that follows a try without progress (tests set 0)
_MD5 = re.compile(r"[0-9a-f]{32}")   # S3 single-part ETag; multipart ones are "<hex>-<parts>"


class _Interrupted(Exception):
    """A GET ended before all the bytes it announced arrived: try again from what is in the part."""


def _object_url(key: str, url: str) -> str:
    return f"{url.rstrip('/')}/{key.lstrip('/')}"     # also for keys written "/nsddata/..."


def _etag(headers) -> str | None:
    return (headers.get("ETag") or "").strip().removeprefix("W/").strip('"') or None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _session(retries: int):
    """A requests session whose urllib3 retries cover what happens before a body arrives: refused
    connections, timeouts and S3's 500/503 ("SlowDown"); a body cut short is resumed by ``download``."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, backoff_factor=RETRY_WAIT_S, status_forcelist=(500, 502, 503, 504),
                  allowed_methods=frozenset({"HEAD", "GET"}), raise_on_status=False)
    session = requests.Session()
    for scheme in ("https://", "http://"):
        session.mount(scheme, HTTPAdapter(max_retries=retry))
    session.headers["Accept-Encoding"] = "identity"   # the object's bytes, never a re-encoding
    return session


def _check(r, key: str, full: str) -> None:
    """A DataError naming the URL for anything but 200/206; S3's error code is quoted when it sent one."""
    if r.status_code in (200, 206):
        return
    found = re.search(r"<Code>(.*?)</Code>", r.text or "")
    what = f"HTTP {r.status_code}" + (f" {found.group(1)}" if found else "")
    if r.status_code == 404:
        raise DataError(f"{full} ({what}): the key {key!r} is not in the bucket; check the key.")
    if r.status_code == 403:
        raise DataError(f"{full} ({what}): access denied to {key!r}. NSD's terms of use must be accepted "
                        f"before downloading (NSD manual, 'How to get the data': {HOW_TO_GET}); S3 also "
                        "answers 403 for a missing key where listing is not allowed, so check the key too.")
    raise DataError(f"{full} ({what}) for {key!r}; retry later.")


def _head(session, key: str, full: str, timeout: float) -> tuple[int | None, str | None]:
    import requests

    try:
        r = session.head(full, timeout=timeout, allow_redirects=True)
    except requests.RequestException as e:
        raise DataError(f"{full}: cannot reach the bucket for {key!r} ({type(e).__name__}: {e})") from e
    _check(r, key, full)
    size = r.headers.get("Content-Length")
    return (int(size) if size is not None else None), _etag(r.headers)


def head(key: str, url: str = BUCKET_URL, timeout: float = 60) -> tuple[int | None, str | None]:
    """(size in bytes, ETag unquoted) of one object from a HEAD request, None where the bucket does
    not say; nothing is transferred (used to price a download).  DataError for a missing key."""
    with _session(3) as session:
        return _head(session, key, _object_url(key, url), timeout)


def _get(session, key: str, full: str, part: Path, size, etag, chunk_bytes: int, timeout: float):
    """One GET appending to ``part`` (or refilling it); (size, etag) of the object that answered."""
    tag_file, have = part.with_name(part.name + ".etag"), _size(part)
    old = tag_file.read_text() if have and tag_file.exists() else None
    if have and old == etag and have == size:
        return size, etag              # finished by an earlier run that stopped before the rename
    # If-Range: the rest of *that* version of the object, or the whole (changed) object with 200.
    headers = {"Range": f"bytes={have}-", "If-Range": f'"{old}"'} if old else {}
    with session.get(full, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416:       # the part is longer than the object: start over
            part.unlink()
            raise _Interrupted(f"{part} is longer than the object")
        _check(r, key, full)
        etag = _etag(r.headers) or etag
        length = r.headers.get("Content-Length")
        if r.status_code == 206:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                part.unlink()
                raise _Interrupted(f"unusable Content-Range {r.headers.get('Content-Range')!r}")
            size, mode = int(m.group(2)), "ab"
        else:   # 200: a fresh start, or the object changed / the server ignores ranges
            if have:
                log.info("%s: the bucket sent the whole object (changed, or no ranges): starting over", key)
            size, mode = (int(length) if length is not None else size), "wb"
            tag_file.unlink(missing_ok=True)   # never an old ETag beside new bytes
        got = 0
        with open(part, mode) as f:
            if mode == "wb" and etag:
                tag_file.write_text(etag)
            # raw bytes as they arrive: iter_content would undo a Content-Encoding, and loses the bytes
            # urllib3 had buffered when the connection is cut (seen with urllib3 2.8)
            for chunk in r.raw.stream(chunk_bytes, decode_content=False):
                got += f.write(chunk)
        if length is not None and got < int(length):
            raise _Interrupted(f"the answer ended after {got} of {length} bytes")
    return size, etag


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".etag").unlink(missing_ok=True)


def _verify(key: str, full: str, part: Path, size: int | None, etag: str | None) -> bool:
    """Check the finished part's size and, for single-part uploads, its MD5 (whether it could);
    on a mismatch delete it and raise DataError."""
    got = part.stat().st_size
    if size is not None and got != size:
        _discard(part)
        raise DataError(f"{key}: {full} announced {size} bytes but {got} arrived; deleted {part}, run again.")
    if not (etag and _MD5.fullmatch(etag)):
        return False                   # multipart ETag: not the content's MD5, so size only
    with open(part, "rb") as f:
        md5 = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False))
    if md5.hexdigest() != etag:
        _discard(part)
        raise DataError(f"{key}: the bytes from {full} have MD5 {md5.hexdigest()}, expected the ETag "
                        f"{etag}; deleted {part}, run again.")
    return True


def _fetch(session, key: str, full: str, part: Path, size, etag, chunk_bytes: int, retries: int, timeout: float):
    """GET into ``part`` until complete, resuming after each cut; give up after ``retries`` tries in a row
    that did not take the part past the longest it has been (so lose-and-refetch cycles end too)."""
    import requests
    import urllib3

    best, stalled = _size(part), 0
    while True:
        try:
            return _get(session, key, full, part, size, etag, chunk_bytes, timeout)
        except (_Interrupted, requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError) as e:
            stalled, best = (0, _size(part)) if _size(part) > best else (stalled + 1, best)
            if stalled > retries:
                raise DataError(f"{key}: {full} failed {stalled} times in a row without progress ({e}); "
                                f"{_size(part)} of {size} bytes are kept in {part}: run again to resume.") from e
            log.warning("%s: %s; resuming after %d bytes", key, e, _size(part))
            time.sleep(RETRY_WAIT_S * stalled)


def download(key: str, dest: Path, url: str = BUCKET_URL, *, chunk_bytes: int = 8 << 20, retries: int = 3,
             timeout: float = 60) -> dict:
    """Fetch object ``key`` of the bucket at ``url`` to ``dest``, resuming the ``<dest>.part`` of an earlier try
    or run; check it (size, and MD5 where the ETag is one), move it onto ``dest``; return {"key", "url", "bytes",
    "etag", "md5_checked"}.  DataError naming key and URL: missing key, access denied, ``retries`` tries in a row
    without progress (the part stays for the next run), or a mismatch (nothing left at ``dest`` nor in the part).
    """
    full, dest = _object_url(key, url), Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)   # the part is written beside dest
    with _session(retries) as session:
        size, etag = _head(session, key, full, timeout)
        log.info("downloading %s (%s bytes)%s -> %s", full, size,
                 f", resuming after {_size(part)} bytes" if _size(part) else "", dest)
        size, etag = _fetch(session, key, full, part, size, etag, chunk_bytes, retries, timeout)
    md5_checked = _verify(key, full, part, size, etag)
    os.replace(part, dest)
    _discard(part)                                   # the ETag file beside the part
    log.info("%s: %d bytes, %s -> %s", key, size, "MD5 checked" if md5_checked else "size checked (multipart ETag)", dest)
    return {"key": key, "url": full, "bytes": dest.stat().st_size, "etag": etag, "md5_checked": md5_checked}
