"""Tests of fmri_recon.data.nsd_bucket against a fake S3 bucket on 127.0.0.1 (tests/support/bucket_server.py).

The server's request log says what the downloader asked for, so a resume that refetches
bytes it already had, or forgets If-Range, fails here even when the file ends up right.
"""
from __future__ import annotations

import random

import pytest

from bucket_server import FakeBucket
from fmri_recon.data import nsd_bucket
from fmri_recon.data.nsd_bucket import download, head
from fmri_recon.helpers import DataError

KEY = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.nii.gz"
SIZE = 300_000


def _content(seed: int = 0, n: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A bucket folder holding KEY; no proxy, no waits between retries."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(nsd_bucket, "RETRY_WAIT_S", 0)
    path = tmp_path / "bucket" / KEY
    path.parent.mkdir(parents=True)
    path.write_bytes(_content())
    return tmp_path / "bucket"


@pytest.fixture
def bucket(root):
    with FakeBucket(root) as server:
        yield server


@pytest.fixture
def dest(tmp_path):
    return tmp_path / "data" / "nested" / "betas_session01.nii.gz"


def _part(dest):
    return dest.with_name(dest.name + ".part")


def _leftovers(dest):
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


def _leave_part(root, dest, after_bytes: int) -> None:
    """An earlier run that died after ``after_bytes`` bytes: every later try got nothing."""
    with FakeBucket(root) as earlier:
        earlier.serve_corrupted(KEY, _content()[:after_bytes])   # the body stops there, each time
        with pytest.raises(DataError, match="without progress"):
            download(KEY, dest, url=earlier.url, retries=1)
        assert earlier.gets(KEY)[-1][2] == f"bytes={after_bytes}-"
    assert _part(dest).read_bytes() == _content()[:after_bytes] and not dest.exists()


def test_full_download(bucket, dest):
    result = download(KEY, dest, url=bucket.url)
    assert dest.read_bytes() == _content()
    assert result == {"key": KEY, "url": f"{bucket.url}/{KEY}", "bytes": SIZE, "etag": bucket.etag(KEY),
                      "md5_checked": True}
    assert bucket.gets(KEY) == [("GET", KEY, None)]
    assert _leftovers(dest) == [dest.name]          # no .part or .part.etag left behind


def test_cut_connection_is_resumed_with_exactly_the_missing_bytes(bucket, dest):
    bucket.cut_next_get(100_000)
    result = download(KEY, dest, url=bucket.url)
    assert dest.read_bytes() == _content() and result["md5_checked"]
    assert bucket.gets(KEY) == [("GET", KEY, None), ("GET", KEY, "bytes=100000-")]
    assert _leftovers(dest) == [dest.name]


def test_part_of_an_earlier_run_is_resumed_not_refetched(root, dest):
    _leave_part(root, dest, 123_456)
    with FakeBucket(root) as later:
        result = download(KEY, dest, url=later.url)
        assert later.gets(KEY) == [("GET", KEY, "bytes=123456-")]
    assert dest.read_bytes() == _content() and result["bytes"] == SIZE
    assert _leftovers(dest) == [dest.name]


def test_part_of_a_changed_object_is_dropped(root, dest):
    """If-Range names the part's version: the bucket answers a changed object whole (200), never its tail."""
    _leave_part(root, dest, 123_456)
    (root / KEY).write_bytes(_content(seed=1))
    with FakeBucket(root) as later:
        result = download(KEY, dest, url=later.url)
        assert later.gets(KEY) == [("GET", KEY, "bytes=123456-")]   # asked with If-Range, got 200
        assert result["etag"] == later.etag(KEY) and result["md5_checked"]
    assert dest.read_bytes() == _content(seed=1)


def test_corrupted_body_raises_and_leaves_nothing(bucket, dest):
    bad = bytearray(_content())
    bad[SIZE // 2] ^= 0xFF
    bucket.serve_corrupted(KEY, bytes(bad))
    with pytest.raises(DataError) as err:
        download(KEY, dest, url=bucket.url)
    message = str(err.value)
    assert KEY in message and bucket.url in message and bucket.etag(KEY) in message
    assert _leftovers(dest) == []                   # neither dest nor a part to resume from


def test_multipart_etag_checks_size_only(bucket, dest):
    bucket.multipart.add(KEY)
    result = download(KEY, dest, url=bucket.url)
    assert result["etag"].endswith("-2") and result["md5_checked"] is False
    assert dest.read_bytes() == _content()
    dest.unlink()
    bucket.serve_corrupted(KEY, _content()[:SIZE - 10])     # a short object is still refused
    with pytest.raises(DataError, match="without progress"):
        download(KEY, dest, url=bucket.url, retries=1)
    assert not dest.exists()


def test_missing_key_names_the_url(bucket, dest):
    with pytest.raises(DataError) as err:
        download("nsddata/no_such_file.nii.gz", dest, url=bucket.url)
    assert f"{bucket.url}/nsddata/no_such_file.nii.gz" in str(err.value) and "not in the bucket" in str(err.value)
    assert _leftovers(dest) == []
    with pytest.raises(DataError, match="not in the bucket"):
        head("nsddata/no_such_file.nii.gz", url=bucket.url)


def test_head_gives_size_and_etag(bucket):
    assert head(KEY, url=bucket.url) == (SIZE, bucket.etag(KEY))
    bucket.multipart.add(KEY)
    assert head(KEY, url=bucket.url) == (SIZE, bucket.etag(KEY))
    assert [r[0] for r in bucket.requests] == ["HEAD", "HEAD"]   # nothing transferred
