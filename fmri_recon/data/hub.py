"""Selective, resumable, verified download of single files from a Hugging Face repo.

The MindEyeV2 data (``pscotti/mindeyev2``) is a *dataset* repo of many large files
(webdataset shards, betas and images in HDF5, some ~22 GB).  The workflow only
needs some of them, so each file is fetched on its own with :func:`download_file`.

What huggingface_hub (verified against 2.4.0) does for us, and we rely on:

* ``hf_hub_download(..., local_dir=...)`` writes the file to ``local_dir/<path in
  repo>`` and keeps its bookkeeping in ``local_dir/.cache/huggingface/``;
* it downloads into a ``.incomplete`` temporary file under that ``.cache`` folder and
  only renames it to the final path once the whole body was received (and had the
  size announced by the hub), so a half-written file never sits at the final path;
* when the connection drops mid-transfer it logs "Trying to resume download...",
  waits 1 s and continues with an HTTP ``Range: bytes=<written>-`` request (up to 5
  attempts in a row without progress), inside the same call.  It writes whole 10 MiB
  chunks, so the bytes of a partly received chunk are asked for again.  The temporary file is unique per
  process and removed on failure, so a download whose *process* died starts over on
  the next run (we remove such orphaned temporary files, see
  ``_remove_stale_partials``).  Files stored with Xet are fetched by ``hf_xet`` when it
  is installed, which handles chunking and retries itself;
* for plain HTTP downloads it only checks the size, not the content: the sha256
  check below is ours.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
from pathlib import Path

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

logger = logging.getLogger("fmri_recon.data.hub")

__all__ = ["HubDownloadError", "download_file", "sha256_file"]

HASH_CHUNK_SIZE = 8 * 1024 * 1024  # 8 MiB: files can be ~22 GB, never read them whole
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NETWORK_ERROR_NAMES = {
    # httpx / httpx2 (recent huggingface_hub) and requests / urllib3 (older versions)
    "ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
    "TimeoutException", "NetworkError", "ReadError", "WriteError", "RemoteProtocolError",
    "ProxyError", "ConnectionError", "SSLError", "Timeout", "MaxRetryError",
}


class HubDownloadError(RuntimeError):
    """A file could not be downloaded from the hub, or failed verification.

    The message names the repo and the file and says what to do about it; the
    original exception, if any, is chained as ``__cause__``.
    """


def sha256_file(path: str | Path, chunk_size: int = HASH_CHUNK_SIZE) -> str:
    """Hex sha256 of a file, read in ``chunk_size`` pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _human(n: int | None) -> str:
    if n is None:
        return "unknown size"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) means "the hub cannot be reached"."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        if type(exc).__name__ in _NETWORK_ERROR_NAMES and not isinstance(exc, HfHubHTTPError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _explain(exc: BaseException, *, repo_id: str, filename: str, revision: str, endpoint: str, repo_type: str) -> str:
    """A message naming the repo and the file, saying what went wrong and what to do."""
    what = f"{filename!r} of {repo_type} {repo_id!r} (revision {revision!r}, HF_ENDPOINT={endpoint})"
    page = f"{endpoint}/datasets/{repo_id}" if repo_type == "dataset" else f"{endpoint}/{repo_id}"
    status = _status_code(exc)
    if isinstance(exc, (GatedRepoError, RepositoryNotFoundError)) or status in (401, 403):
        terms = (
            "accept the NSD terms of use (https://naturalscenesdataset.org) and the dataset's conditions "
            f"on its Hugging Face page ({page})"
            if repo_type == "dataset"
            else f"accept the repo's conditions on its Hugging Face page ({page}) if it is gated"
        )
        return (
            f"cannot download {what}: access denied ({type(exc).__name__}, HTTP {status}). "
            f"{repo_id} is gated (the hub also answers like this for a missing or invalid token, or a wrong "
            f"repo id): {terms}, create a token (https://huggingface.co/settings/tokens) "
            "and export HF_TOKEN=<your token> before running the workflow."
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"cannot download {what}: revision {revision!r} does not exist in {repo_id}; fix the revision in the config."
    # LocalEntryNotFoundError is also an EntryNotFoundError: it means "offline", handled below.
    if (isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError)) or status == 404:
        return (
            f"cannot download {what}: the file does not exist at revision {revision!r} (HTTP 404); "
            "check the file name and the revision in the config."
        )
    if _is_network_error(exc):
        offline = " because HF_HUB_OFFLINE is set" if constants.is_offline_mode() else ""
        return (
            f"cannot download {what}: no network access to the hub (HF_ENDPOINT={endpoint}){offline}; "
            "download on a machine with internet, or set download: false and put the files in data_dir. "
            f"({type(exc).__name__}: {exc})"
        )
    if status is not None:
        return f"cannot download {what}: the hub answered HTTP {status} ({exc}); retry later."
    return f"cannot download {what}: {type(exc).__name__}: {exc}"


def _remove_stale_partials(local_dir: Path, filename: str, etag: str) -> None:
    """Remove ``.incomplete`` files of ``filename`` left by a download process that was killed.

    huggingface_hub 2.4.0 names its temporary file ``<hash>.<etag>.<random>.incomplete``
    (unique per process) and deletes it on failure, but a killed process leaves it
    behind forever; for 22 GB files that matters.  We hold huggingface_hub's own lock
    for the file while removing them, so a download running elsewhere is not touched.
    Best effort: any surprise in huggingface_hub's private layout just skips this.
    """
    try:
        from huggingface_hub._local_folder import get_local_download_paths
        from huggingface_hub.utils import WeakFileLock

        paths = get_local_download_paths(local_dir, filename)
        prefix = paths.incomplete_path(etag).stem  # "<hash>.<etag>"
        with WeakFileLock(paths.lock_path):
            for stale in paths.metadata_path.parent.glob(f"{prefix}.*.incomplete"):
                logger.warning("removing partial download left by an interrupted run: %s", stale)
                stale.unlink(missing_ok=True)
    except Exception as e:  # noqa: BLE001 - housekeeping must never break a download
        logger.debug("could not look for stale partial downloads of %s: %s", filename, e)


def _hub_metadata(url: str, token: str | None, endpoint: str):
    kwargs = {"token": token, "timeout": constants.HF_HUB_ETAG_TIMEOUT, "endpoint": endpoint}
    if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
        kwargs["retry_on_errors"] = True  # retry 429/5xx/network errors with backoff
    return get_hf_file_metadata(url, **kwargs)


def file_size(repo_id: str, filename: str, *, revision: str = "main", repo_type: str = "dataset",
              token: str | None = None, endpoint: str | None = None) -> int | None:
    """Size in bytes of one hub file from its metadata (one HEAD request, nothing transferred);
    None when the hub does not say. Raises HubDownloadError as ``download_file`` does."""
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    token = token or os.environ.get("HF_TOKEN") or None
    url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision, endpoint=endpoint)
    try:
        return _hub_metadata(url, token, endpoint).size
    except Exception as e:
        raise HubDownloadError(_explain(e, repo_id=repo_id, filename=filename, revision=revision, endpoint=endpoint,
                                        repo_type=repo_type)) from e


def download_file(
    repo_id: str,
    filename: str,
    local_dir: str | Path,
    *,
    revision: str = "main",
    token: str | None = None,
    verify: bool = True,
    repo_type: str = "dataset",
    endpoint: str | None = None,
) -> Path:
    """Download one file of a hub repo to ``Path(local_dir) / filename``; return its absolute path.

    Args:
        repo_id: e.g. ``"pscotti/mindeyev2"``.
        filename: path of the file in the repo (``/``-separated), e.g.
            ``"wds/subj01/train/0.tar"``; it keeps that relative path under ``local_dir``.
        local_dir: destination folder; huggingface_hub keeps its bookkeeping in
            ``local_dir/.cache/huggingface/``.
        revision: branch, tag or commit.  The commit it resolves to is pinned for the
            download, so the file verified is the file downloaded.
        token: hub token.  ``None`` means ``os.environ["HF_TOKEN"]`` if set, otherwise
            whatever huggingface_hub finds itself (e.g. the token saved by ``hf auth login``).
        verify: check the final file against the hub's metadata: its size, and for LFS
            files (whose ETag is a sha256) its sha256.  A file that fails is deleted.
            Needs the hub to be reachable, even when the file is already there.
        repo_type: ``"dataset"`` (default), ``"model"`` or ``"space"``.
        endpoint: hub URL; ``None`` means ``$HF_ENDPOINT`` (read at call time) or
            huggingface_hub's default, https://huggingface.co.

    Raises:
        HubDownloadError: on any failure; the message names the repo and the file and
            says what to do (accept the terms and set HF_TOKEN, fix the file name,
            get network access or set ``download: false``...).  Nothing is left at the
            final path unless it is complete and verified (a file that was there before
            the call is only removed when verification proves it wrong).
    """
    local_dir = Path(local_dir).expanduser().resolve()  # as huggingface_hub does
    final_path = local_dir / Path(*filename.split("/"))
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    if token is None:
        token = os.environ.get("HF_TOKEN") or None
    existed_before = final_path.exists()
    context = dict(repo_id=repo_id, filename=filename, revision=revision, endpoint=endpoint, repo_type=repo_type)

    try:
        download_revision = revision
        expected_size = expected_etag = None
        if verify:
            url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision, endpoint=endpoint)
            meta = _hub_metadata(url, token, endpoint)
            expected_size, expected_etag = meta.size, meta.etag
            if meta.commit_hash:
                download_revision = meta.commit_hash  # pin: verify exactly what we download
            logger.info(
                "%s %s:%s (%s) from %s, commit %s -> %s",
                "checking" if existed_before else "downloading",
                repo_id, filename, _human(expected_size), endpoint, meta.commit_hash, final_path,
            )
            if expected_etag:
                _remove_stale_partials(local_dir, filename, expected_etag)
        else:
            logger.info("downloading %s:%s@%s from %s (unverified) -> %s",
                        repo_id, filename, revision, endpoint, final_path)

        # huggingface_hub downloads into a `.incomplete` temporary file, resumes an
        # interrupted transfer with an HTTP Range request, and only then moves the file to
        # its final path: we rely on that instead of reimplementing it (module docstring).
        result = Path(
            hf_hub_download(
                repo_id,
                filename,
                repo_type=repo_type,
                revision=download_revision,
                local_dir=local_dir,
                token=token,
                endpoint=endpoint,
            )
        )
    except Exception as e:
        if not existed_before and final_path.exists():
            final_path.unlink()
        raise HubDownloadError(_explain(e, **context)) from e
    if result != final_path:  # never expected: huggingface_hub mirrors the repo layout
        raise HubDownloadError(f"huggingface_hub put {filename!r} of {repo_id!r} at {result}, expected {final_path}")

    if verify:
        _verify(result, repo_id=repo_id, filename=filename, expected_size=expected_size, expected_etag=expected_etag)
    size = result.stat().st_size
    logger.info("%s:%s is at %s (%s, %s)", repo_id, filename, result, _human(size),
                "verified" if verify else "not verified")
    return result


def _verify(path: Path, *, repo_id: str, filename: str, expected_size: int | None, expected_etag: str | None) -> None:
    """Check size and (for LFS files) sha256 of ``path``; delete it and raise on mismatch."""
    got_size = path.stat().st_size
    if expected_size is not None and got_size != expected_size:
        path.unlink(missing_ok=True)
        raise HubDownloadError(
            f"size mismatch for {filename!r} of {repo_id!r} ({path}): expected {expected_size} bytes, "
            f"got {got_size}; the file was deleted, run the download again."
        )
    if expected_etag and _SHA256_RE.fullmatch(expected_etag):
        logger.info("verifying sha256 of %s (%s)", path, _human(got_size))
        got = sha256_file(path)
        if got != expected_etag:
            path.unlink(missing_ok=True)
            raise HubDownloadError(
                f"checksum mismatch for {filename!r} of {repo_id!r} ({path}): expected sha256 {expected_etag}, "
                f"got {got}; the file was deleted, run the download again."
            )
    else:
        # Non-LFS (small, git-stored) files carry a git blob sha1 as ETag: size check only.
        logger.info("%s is not an LFS file (ETag %s): checked its size only", filename, expected_etag)

