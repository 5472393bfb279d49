"""Tests of fmri_recon.data.hub against a fake hub on 127.0.0.1 (tests/support/hub_server.py).

The REAL huggingface_hub code path is used: ``download_file`` reads ``HF_ENDPOINT``
at call time and passes it to huggingface_hub as ``endpoint=``, so setting the env var
with monkeypatch is enough (``huggingface_hub.constants.ENDPOINT`` is read at import
time and stays untouched).  Everything else huggingface_hub reads from its
``constants`` module (also filled at import time) is monkeypatched there: cache and
token paths into tmp_path, Xet off, offline mode off, short timeouts.  A socket guard
makes any connection to a host other than the loopback fail the test.
"""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import sys
import types
from pathlib import Path

import pytest


import huggingface_hub.utils._http as hf_http  # noqa: E402
from huggingface_hub import constants  # noqa: E402
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError  # noqa: E402
from huggingface_hub.errors import RemoteEntryNotFoundError  # noqa: E402

from fmri_recon.data.hub import HubDownloadError, download_file, sha256_file  # noqa: E402
from hub_server import FakeHub  # noqa: E402

REPO = "pscotti/mindeyev2"
SHARD = "wds/subj01/train/0.tar"


def _content(n: int = 300_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture(autouse=True)
def hf_env(tmp_path, monkeypatch):
    """Isolate huggingface_hub: no token, no cache, no Xet, no proxy, loopback only."""
    home = tmp_path / "hf_home"
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE", "HF_ENDPOINT",
                "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # huggingface_hub read these at import time: patch the module attributes it uses.
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    # With telemetry on, the first request's user-agent runs detect_agent(), which
    # fetches {constants.ENDPOINT}/api/agent-harnesses: huggingface.co in this process.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 5)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 5)

    loopback = ("127.0.0.1", "::1", "localhost")
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    violations: list[str] = []  # recorded too: huggingface_hub swallows some errors

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in loopback:
            violations.append(f"connect {address}")
            raise OSError(f"test tried to reach {address}")
        return real_connect(sock, address)

    def resolve_loopback_only(host, *args, **kwargs):
        if host is not None and host not in loopback:
            violations.append(f"resolve {host}")
            raise OSError(f"test tried to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setattr(socket, "getaddrinfo", resolve_loopback_only)
    hf_http.close_session()  # the shared httpx client is rebuilt with the env above
    yield violations
    hf_http.close_session()
    assert violations == [], f"non-loopback network access: {violations}"


@pytest.fixture
def hub(monkeypatch):
    with FakeHub({SHARD: _content(), "README.md": b"# mindeyev2\n"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server
    assert server.unknown == [], f"unexpected requests: {server.unknown}"


@pytest.fixture
def no_backoff_sleep(monkeypatch):
    """huggingface_hub retries network errors 5 times with 1-8 s sleeps: record, don't wait."""
    sleeps: list[float] = []
    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_downloads_nested_file_to_same_relative_path(hub, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fmri_recon.data.hub")
    local = tmp_path / "data"
    path = download_file(REPO, SHARD, local)

    assert path == local / "wds" / "subj01" / "train" / "0.tar" and path.is_absolute()
    assert path.read_bytes() == hub.files[SHARD]
    assert sha256_file(path) == hub.sha256(SHARD)
    # only the file, plus huggingface_hub's own bookkeeping folder
    assert {p.name for p in local.iterdir()} == {"wds", ".cache"}
    assert {f for f in _files(local) if not f.startswith(".cache/")} == {SHARD}
    assert not [f for f in _files(local) if f.endswith(".incomplete")]
    # one GET of the body, no Range
    assert [r[2] for r in hub.gets(SHARD)] == [None]
    assert "HEAD" in {r[0] for r in hub.requests}
    text = caplog.text
    assert SHARD in text and hub.endpoint in text and "292.97 KiB" in text


def test_relative_local_dir(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Snakemake passes paths relative to the workdir
    path = download_file(REPO, SHARD, "data/mindeyev2")
    assert path == tmp_path / "data/mindeyev2" / SHARD
    assert path.read_bytes() == hub.files[SHARD]


def test_non_lfs_file_size_checked_and_token_from_env(hub, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="fmri_recon.data.hub")
    hub.non_lfs.add("README.md")
    hub.require_token = "hf_secret"
    monkeypatch.setenv("HF_TOKEN", "hf_secret")  # token=None -> $HF_TOKEN
    path = download_file(REPO, "README.md", tmp_path / "d")
    assert path.read_bytes() == b"# mindeyev2\n"
    # git-stored files have a git blob sha1 ETag: only their size is compared
    assert "not an LFS file" in caplog.text and "checked its size only" in caplog.text


def test_interrupted_transfer_resumes_with_range(hub, tmp_path, caplog, monkeypatch):
    # huggingface_hub 2.4.0 reads the body with iter_bytes(chunk_size=DOWNLOAD_CHUNK_SIZE)
    # (10 MiB) and only counts/writes whole chunks; use 64 KiB chunks to see the resume
    # on a small file.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    caplog.set_level(logging.WARNING, logger="huggingface_hub")
    hub.cut_next_get(100_000)
    path = download_file(REPO, SHARD, tmp_path / "data")

    assert path.read_bytes() == hub.files[SHARD]
    # Verified: http_get catches the RemoteProtocolError of the short body, logs
    # "Trying to resume download...", sleeps 1 s and re-requests from the end of the
    # last whole chunk it wrote (65536, not 100000), appending to the same temp file.
    assert [r[2] for r in hub.gets(SHARD)] == [None, "bytes=65536-"]
    assert "Trying to resume download" in caplog.text
    assert not [f for f in _files(tmp_path / "data") if f.endswith(".incomplete")]


def test_interruption_within_first_chunk_restarts_from_zero(hub, tmp_path):
    # With the default 10 MiB chunks, bytes received before the cut but not yet making
    # a whole chunk are dropped: the retry asks for the body again without Range.
    hub.cut_next_get(100_000)
    path = download_file(REPO, SHARD, tmp_path / "data")
    assert path.read_bytes() == hub.files[SHARD]
    assert [r[2] for r in hub.gets(SHARD)] == [None, None]


def test_second_call_does_not_transfer_again(hub, tmp_path):
    local = tmp_path / "data"
    first = download_file(REPO, SHARD, local)
    mtime = first.stat().st_mtime_ns
    n_get = len(hub.gets())

    second = download_file(REPO, SHARD, local)
    assert second == first
    assert len(hub.gets()) == n_get  # no new GET: only metadata (HEAD) was asked
    assert second.stat().st_mtime_ns == mtime
    assert second.read_bytes() == hub.files[SHARD]


def test_stale_partial_of_killed_run_is_removed(hub, tmp_path):
    local = tmp_path / "data"
    download_file(REPO, SHARD, local)
    (local / "wds/subj01/train/0.tar").unlink()
    # what a killed process leaves behind: <hash>.<etag>.<random>.incomplete
    partial_dir = local / ".cache/huggingface/download/wds/subj01/train"
    from huggingface_hub._local_folder import get_local_download_paths

    prefix = get_local_download_paths(local, SHARD).incomplete_path(hub.sha256(SHARD)).stem
    stale = partial_dir / f"{prefix}.deadbeef.incomplete"
    stale.write_bytes(b"x" * 1000)
    other = partial_dir / "unrelated.txt"
    other.write_text("keep")

    path = download_file(REPO, SHARD, local)
    assert path.read_bytes() == hub.files[SHARD]
    assert not stale.exists()
    assert other.exists()


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("token", [None, "hf_wrong"])
def test_missing_or_wrong_token(tmp_path, monkeypatch, token, verify):
    with FakeHub({SHARD: _content()}, require_token="hf_right") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        with pytest.raises(HubDownloadError) as info:
            download_file(REPO, SHARD, tmp_path / "data", token=token, verify=verify)
        assert server.gets() == []

    msg = str(info.value)
    assert "HF_TOKEN" in msg and "NSD terms of use" in msg and "naturalscenesdataset.org" in msg
    assert REPO in msg and SHARD in msg
    cause = info.value.__cause__
    if token is None:  # no Authorization header: the hub says "gated"
        assert isinstance(cause, GatedRepoError)
    else:  # invalid token: 401 "Invalid credentials", a plain HfHubHTTPError
        assert isinstance(cause, HfHubHTTPError) and cause.response.status_code == 401
    assert not (tmp_path / "data" / SHARD).exists()


def test_right_token_downloads(tmp_path, monkeypatch):
    with FakeHub({SHARD: _content()}, require_token="hf_right") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        path = download_file(REPO, SHARD, tmp_path / "data", token="hf_right")
        assert path.read_bytes() == server.files[SHARD]


@pytest.mark.parametrize("verify", [True, False])
def test_missing_file(hub, tmp_path, verify):
    with pytest.raises(HubDownloadError) as info:
        download_file(REPO, "wds/subj09/train/0.tar", tmp_path / "data", verify=verify)
    msg = str(info.value)
    assert "wds/subj09/train/0.tar" in msg and REPO in msg
    assert "does not exist" in msg and "'main'" in msg
    assert isinstance(info.value.__cause__, RemoteEntryNotFoundError)
    assert not (tmp_path / "data" / "wds/subj09/train/0.tar").exists()
    assert hub.gets() == []


def test_missing_revision(hub, tmp_path):
    with pytest.raises(HubDownloadError, match="revision 'v9' does not exist"):
        download_file(REPO, SHARD, tmp_path / "data", revision="v9")
    assert not (tmp_path / "data" / SHARD).exists()


@pytest.mark.parametrize("verify", [True, False])
def test_no_server_listening(tmp_path, monkeypatch, no_backoff_sleep, verify):
    with socket.socket() as s:  # find a free port, then close it: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)

    with pytest.raises(HubDownloadError) as info:
        download_file(REPO, SHARD, tmp_path / "data", verify=verify)
    msg = str(info.value)
    assert "no network access" in msg and "download: false" in msg and endpoint in msg
    assert REPO in msg and SHARD in msg
    # huggingface_hub retried the connection with exponential backoff before giving up
    assert no_backoff_sleep[:5] == [1, 2, 4, 8, 8]
    if not verify:  # through hf_hub_download: "cannot find the requested files in the local cache"
        assert isinstance(info.value.__cause__, LocalEntryNotFoundError)
    assert not (tmp_path / "data" / SHARD).exists()


@pytest.mark.parametrize("verify", [True, False])
def test_offline_mode(hub, tmp_path, monkeypatch, verify):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(HubDownloadError) as info:
        download_file(REPO, SHARD, tmp_path / "data", verify=verify)
    msg = str(info.value)
    assert "no network access" in msg and "HF_HUB_OFFLINE" in msg and "download: false" in msg
    assert hub.requests == []  # huggingface_hub refuses before sending anything
    assert not (tmp_path / "data" / SHARD).exists()


def test_corrupted_content_is_deleted(hub, tmp_path):
    good = hub.files[SHARD]
    bad = bytearray(good)
    bad[12345] ^= 0xFF
    hub.serve_corrupted(SHARD, bytes(bad))

    with pytest.raises(HubDownloadError) as info:
        download_file(REPO, SHARD, tmp_path / "data")
    msg = str(info.value)
    assert "checksum mismatch" in msg and SHARD in msg
    assert hub.sha256(SHARD) in msg and hashlib.sha256(bad).hexdigest() in msg
    assert not (tmp_path / "data" / SHARD).exists()
    assert not [f for f in _files(tmp_path / "data") if f.endswith(".incomplete")]

    # the next run downloads it again, and gets it right once the server is fixed
    hub.serve_corrupted(SHARD, good)
    assert download_file(REPO, SHARD, tmp_path / "data").read_bytes() == good


def test_short_body_is_not_left_at_final_path(hub, tmp_path):
    # The server's metadata announces the full size but the GET body is short (and
    # complete as far as HTTP goes): huggingface_hub's own size check raises OSError
    # ("Consistency check failed") and removes its temporary file.
    hub.serve_corrupted(SHARD, hub.files[SHARD][:1000])
    with pytest.raises(HubDownloadError) as info:
        download_file(REPO, SHARD, tmp_path / "data")
    assert SHARD in str(info.value)
    assert not (tmp_path / "data" / SHARD).exists()
    assert not [f for f in _files(tmp_path / "data") if f.endswith(".incomplete")]


def test_verify_false_skips_checksum(hub, tmp_path):
    bad = bytearray(hub.files[SHARD])
    bad[0] ^= 0xFF
    hub.serve_corrupted(SHARD, bytes(bad))
    path = download_file(REPO, SHARD, tmp_path / "data", verify=False)
    assert path.read_bytes() == bytes(bad)


RUN_SCRIPT = """
import json, runpy, sys, types
out, log, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
snakemake = types.SimpleNamespace(params=types.SimpleNamespace(**params), output=[out], log=[log],
                                 scriptdir="scripts")
runpy.run_path("scripts/download.py", init_globals={"snakemake": snakemake}, run_name="__main__")
"""


@pytest.mark.parametrize("filename", [SHARD, "missing.tar"])
def test_snakemake_script(hub, tmp_path, filename):
    """scripts/download.py as Snakemake runs it: a fresh process configured by env vars."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    data, log = tmp_path / "data", tmp_path / "logs" / "download.log"
    log.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "http_", "https_", "HTTP"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1,localhost", PYTHONPATH=str(root))
    params = {"repo_id": REPO, "revision": "main", "filename": filename, "verify": True, "local_dir": str(data),
              "repo_type": "dataset"}
    out = data / filename
    proc = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(out), str(log), json.dumps(params)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=60)
    text = log.read_text()
    if filename == SHARD:
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes() == hub.files[SHARD]
        assert f"downloading {REPO}:{SHARD}" in text and "verified" in text and "done:" in text
    else:
        assert proc.returncode != 0 and not out.exists()
        assert "HubDownloadError" in proc.stderr and "does not exist" in proc.stderr
        assert "ERROR fmri_recon" in text and "does not exist" in text
