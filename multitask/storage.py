"""Where a checkpoint comes from: a local path, or a storage URI fetched once per node into a cache keyed by content.

    locate_checkpoint("checkpoints/default")          # a path: relative ones from the working directory, else the
                                                      # project root
    locate_checkpoint("s3://bucket/multitask/v3")     # fetched into ~/.cache/multitask/checkpoints/<digest>/
    upload_checkpoint("checkpoints/default", "s3://bucket/multitask/v3")

Every consumer (the graph builder, each replica, the CLI) calls `locate_checkpoint`, so a URI works wherever a path
does. Head artifacts (`multitask add-task`, multitask/head_artifact.py) are uploaded and fetched the same way, checked
by `check_head_artifact` instead (`check_artifact` tells them apart). URIs go through `pyarrow.fs`, the layer Ray uses for storage: `s3://`, `gs://`, `hdfs://`, `abfs://`, `file://`.
S3 credentials and endpoint: pyarrow reads the standard variables itself when it opens a URI
(`FileSystem.from_uri`, as here and in Ray Train; its `S3FileSystem(...)` constructor ignores AWS_ENDPOINT_URL):
`AWS_ENDPOINT_URL` (an S3-compatible server, e.g. MinIO or a test server on 127.0.0.1), `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, then ~/.aws and the instance role. Nothing here reads
them, so a test server and a real bucket take the same code path.

The digest file. `upload_checkpoint` writes `digest.json` (each file's size and SHA-256) after every other file,
and deletes the previous one first: while an upload runs, the checkpoint has no digest file. A fetch reads that small
file first; its hash is the cache key, so a checkpoint already in the cache costs one small read. A checkpoint
without one (copied into the bucket by hand, or an upload in progress) is downloaded whole, checked by
`check_checkpoint` only, and cached under the digest of what arrived; the listing it came from (names, sizes,
modification times) is remembered per URI, so a next fetch of an unchanged listing reuses it without downloading.

One download per node: a fetch holds an exclusive `fcntl` lock per key (`<cache>/.locks/`; the kernel releases it
when a process dies), so replicas that start together download once and the others wait, then reuse it. Nothing
half-written is used: files stream into `<cache>/.staging-*` (each hashed on the way and compared with the digest
file), the folder passes `check_checkpoint`, and only then is it renamed to `<cache>/<key>/`; a folder under its
key is always whole. The cache is never pruned: remove old keys by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from multitask.checkpoint.check import check_checkpoint
from multitask.checkpoint.digest import FileDigests, file_digests
from multitask.checkpoint.format import CONFIG_FILE, DIGEST_FILE
from multitask.errors import CheckpointError

if TYPE_CHECKING:
    import pyarrow.fs

logger = logging.getLogger(__name__)

DIGEST_FORMAT = 1
CHECKPOINT_CACHE_DIR = Path.home() / ".cache" / "multitask" / "checkpoints"
INSTALL_ROOT = Path(__file__).resolve().parents[1]
"""Where relative checkpoint paths resolve when not found from the working directory: beside graph.py (the repo,
or site-packages, where the wheel installs `checkpoints/default`)."""
_CHUNK = 8 << 20
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_UPLOAD_HINT = "upload one with `multitask upload`, `multitask train --output URI` or `multitask bundle SRC URI`"


def is_uri(location: str | Path) -> bool:
    """`s3://bucket/x`, `file:///x`: yes; `checkpoints/default`, `/mnt/x`: no."""
    return bool(_URI.match(str(location)))


def checkpoint_name(location: str | Path) -> str:
    """The last segment of a path or URI: how responses and logs name a checkpoint."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def locate_checkpoint(location: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The local directory of the checkpoint at `location`: a URI's copy in the node-local cache (fetched on first
    use, into `cache_dir`, default ~/.cache/multitask/checkpoints); an absolute path as it is; a relative path from
    the working directory if it exists there, else from `INSTALL_ROOT` (replicas and the Serve controller do not
    share the shell's working directory)."""
    if is_uri(location):
        return fetch_checkpoint(str(location), Path(cache_dir or CHECKPOINT_CACHE_DIR).expanduser())
    path = Path(location).expanduser()
    if path.is_absolute():
        return path
    if path.exists():
        return path.resolve()
    return INSTALL_ROOT / path


def cache_key(files: FileDigests) -> str:
    """The cache folder name of a checkpoint: a hash of its digest (every file's name, size and SHA-256)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:32]


# --- upload --------------------------------------------------------------------------------------------------------


def upload_checkpoint(local_dir: str | Path, uri: str) -> FileDigests:
    """Copy the checkpoint in `local_dir` to `uri` (overwriting files of the same names there) and write its digest
    file last. Refuses a directory that fails `check_checkpoint`. Returns the digest written."""
    directory = Path(local_dir)
    check_artifact(directory)
    files = file_digests(directory)
    remote = _Remote.open(uri)
    try:
        remote.delete(DIGEST_FILE)  # from now until the end, the checkpoint there reads as incomplete
        for name in files:
            with (directory / name).open("rb") as source, remote.writer(name) as sink:
                shutil.copyfileobj(source, sink, _CHUNK)
        with remote.writer(DIGEST_FILE) as sink:
            sink.write(_digest_json(files).encode())
    except OSError as exc:
        raise _storage_error(uri, "upload to", exc) from exc
    logger.info(f"Uploaded checkpoint {directory} to {uri} ({len(files)} files)")
    return files


# --- fetch ---------------------------------------------------------------------------------------------------------


def fetch_checkpoint(uri: str, cache_dir: Path) -> Path:
    """The cache folder holding the checkpoint at `uri`, downloading it first unless a complete one is there."""
    remote = _Remote.open(uri)
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = remote.read_digest()
    if files is None:
        return _fetch_without_digest(remote, cache_dir)
    key = cache_key(files)
    target = cache_dir / key
    if _is_complete(target, files):
        return target
    with _locked(cache_dir, key):  # the other replicas of this node wait here, then find it complete
        if not _is_complete(target, files):
            staging = _download(remote, files, cache_dir, key)
            _publish(staging, target)
    return target


def _fetch_without_digest(remote: _Remote, cache_dir: Path) -> Path:
    """A checkpoint without a digest file: download it whole, key it by what arrived, remember the listing."""
    listing = remote.listing()
    from multitask.head_artifact import HEAD_FILE

    if CONFIG_FILE not in listing and HEAD_FILE not in listing:
        raise CheckpointError(
            f"{remote.uri} holds no {CONFIG_FILE} (nor {HEAD_FILE}): it is not a checkpoint or head; {_UPLOAD_HINT}."
        )
    uri_key = hashlib.sha256(remote.uri.encode()).hexdigest()[:32]
    memo = cache_dir / ".listings" / f"{uri_key}.json"
    with _locked(cache_dir, uri_key):
        known = _read_json(memo)
        if known and known.get("listing") == listing and _is_complete(cache_dir / known["key"], None):
            return cache_dir / known["key"]
        logger.warning(
            f"{remote.uri} has no {DIGEST_FILE}: downloading it whole. It may be an upload in progress; "
            f"only check_checkpoint vouches for it ({_UPLOAD_HINT} to add one)."
        )
        expected = {name: {"size": size, "sha256": None} for name, (size, _) in listing.items()}
        staging = _download(remote, expected, cache_dir, uri_key)
        key = cache_key(json.loads((staging / DIGEST_FILE).read_text())["files"])
        with _locked(cache_dir, key):
            if _is_complete(cache_dir / key, None):
                shutil.rmtree(staging)  # the same content is cached already (e.g. under another URI)
            else:
                _publish(staging, cache_dir / key)
        memo.parent.mkdir(exist_ok=True)
        memo.write_text(json.dumps({"uri": remote.uri, "listing": listing, "key": key}))
        return cache_dir / key


def _download(remote: _Remote, files: FileDigests, cache_dir: Path, label: str) -> Path:
    """Download `files` into a new staging folder in `cache_dir`, checking each size and SHA-256 (None: not known)
    as it streams, then `check_checkpoint`; returns the folder, with its digest file. Called under `label`'s lock,
    so staging folders of that label left by processes that died are removed first."""
    for stale in cache_dir.glob(f".staging-{label}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{label}-", dir=cache_dir))
    try:
        logger.info(f"Fetching checkpoint {remote.uri} into {cache_dir} ({len(files)} files)")
        digest = {}
        for name, expected in files.items():
            destination = staging / _safe_relative(name, remote.uri)
            destination.parent.mkdir(parents=True, exist_ok=True)
            digest[name] = remote.download(name, destination)
            if digest[name]["size"] != expected["size"] or expected["sha256"] not in (None, digest[name]["sha256"]):
                raise CheckpointError(
                    f"{remote.uri}/{name} is not the file expected (got {digest[name]}, expected {expected}): it "
                    "changed while being fetched, or was damaged after the upload. Upload the checkpoint again."
                )
        (staging / DIGEST_FILE).write_text(_digest_json(digest))
        try:
            check_artifact(staging)
        except CheckpointError as exc:  # name the stored files, not the staging folder about to be removed
            message = str(exc).replace(str(staging), remote.uri)
            raise CheckpointError(f"{remote.uri} is not a usable checkpoint: {message}") from None
        return staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_artifact(directory: Path) -> None:
    """`check_checkpoint`, or for a head artifact (`multitask add-task`; a folder with `head.json` and no
    `config.json`) `check_head_artifact`: uploads and fetches carry both kinds the same way."""
    from multitask.head_artifact import check_head_artifact, is_head_artifact

    if is_head_artifact(directory) and not (directory / CONFIG_FILE).is_file():
        check_head_artifact(directory)
    else:
        check_checkpoint(directory)


def fetch_file(location: str | Path, directory: Path) -> Path:
    """A single file (a data file, say): a local path as it is; a storage URI downloaded into `directory` under
    its own name (so its suffix still says its format)."""
    if not is_uri(location):
        return Path(location).expanduser()
    parent, _, name = str(location).rstrip("/").rpartition("/")
    if not name or "://" not in parent:
        raise CheckpointError(f"{location} names no file; give the URI of a file (s3://bucket/data/train.jsonl).")
    directory.mkdir(parents=True, exist_ok=True)
    destination = directory / name
    _Remote.open(parent).download(name, destination)
    return destination


def _publish(staging: Path, target: Path) -> None:
    """Move a checked staging folder to its key (under that key's lock): the only way a cache folder appears."""
    if target.exists():
        shutil.rmtree(target)  # an incomplete folder (files removed by hand): its replacement is whole
    os.rename(staging, target)


def _is_complete(target: Path, files: FileDigests | None) -> bool:
    """`target` holds a published checkpoint (of `files`, when given) with every file at its recorded size."""
    recorded = _read_json(target / DIGEST_FILE)
    if recorded is None or (files is not None and recorded.get("files") != files):
        return False
    return all(
        (target / name).is_file() and (target / name).stat().st_size == file["size"]
        for name, file in recorded["files"].items()
    )


@contextmanager
def _locked(cache_dir: Path, key: str) -> Iterator[None]:
    """An exclusive lock per key for every process of this node (released by the kernel if the holder dies)."""
    locks = cache_dir / ".locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _safe_relative(name: str, uri: str) -> PurePosixPath:
    """A digest's file name as a path inside the checkpoint; a name that would leave it is refused."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise CheckpointError(f"{uri}/{DIGEST_FILE} names the file {name!r}, outside the checkpoint; refusing it.")
    return path


def _digest_json(files: FileDigests) -> str:
    return json.dumps({"format": DIGEST_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- the storage side, through pyarrow.fs ---------------------------------------------------------------------------


@dataclass
class _Remote:
    """A checkpoint folder in storage: `uri` as given, pyarrow's filesystem for it and its path there."""

    uri: str
    fs: pyarrow.fs.FileSystem
    root: str

    @classmethod
    def open(cls, uri: str) -> _Remote:
        import pyarrow.fs

        uri = uri.rstrip("/")
        try:
            fs, root = pyarrow.fs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as exc:  # pyarrow.ArrowInvalid is a ValueError: an unknown scheme, a bad URI
            raise _storage_error(uri, "open", exc) from exc
        return cls(uri, fs, root.rstrip("/"))

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read_digest(self) -> FileDigests | None:
        """The digest file's files, or None when there is none."""
        try:
            with self.fs.open_input_stream(self.path(DIGEST_FILE)) as stream:
                raw = stream.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(self.uri, "read", exc) from exc
        try:
            digest = json.loads(raw)
            if digest["format"] != DIGEST_FORMAT:
                raise ValueError(f"format {digest['format']}, this code reads {DIGEST_FORMAT}")
            return {name: {"size": int(f["size"]), "sha256": str(f["sha256"])} for name, f in digest["files"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{self.uri}/{DIGEST_FILE} is not a valid digest file ({exc!r}); upload the checkpoint again."
            ) from exc

    def listing(self) -> dict[str, list[int]]:
        """Every file under the folder: relative name -> [size, modification time in ns]."""
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.root, recursive=True))
        except FileNotFoundError:
            infos = []
        except OSError as exc:
            raise _storage_error(self.uri, "list", exc) from exc
        files = {
            info.path[len(self.root) + 1 :]: [info.size, info.mtime_ns or 0]
            for info in infos
            if info.type == pyarrow.fs.FileType.File
        }
        if not files:
            raise CheckpointError(f"Nothing is stored at {self.uri}: check the URI; {_UPLOAD_HINT}.")
        return files

    def download(self, name: str, destination: Path) -> dict[str, Any]:
        """Stream one file to `destination`; returns its size and SHA-256."""
        digest, size = hashlib.sha256(), 0
        try:
            with self.fs.open_input_stream(self.path(name)) as stream, destination.open("wb") as sink:
                while block := stream.read(_CHUNK):
                    digest.update(block)
                    size += len(block)
                    sink.write(block)
        except OSError as exc:
            raise _storage_error(f"{self.uri}/{name}", "download", exc) from exc
        return {"size": size, "sha256": digest.hexdigest()}

    @contextmanager
    def writer(self, name: str) -> Iterator[Any]:
        if self.fs.type_name == "local":  # object stores have no folders to create; a local filesystem does
            self.fs.create_dir(self.path(name).rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self.path(name)) as stream:
            yield stream

    def delete(self, name: str) -> None:
        import pyarrow.fs

        if self.fs.get_file_info(self.path(name)).type == pyarrow.fs.FileType.File:
            self.fs.delete_file(self.path(name))


def _storage_error(uri: str, action: str, exc: Exception) -> CheckpointError:
    """A storage failure as CheckpointError naming the URI and the likely fix."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError):
        fix = f"nothing is stored there; check the URI, or {_UPLOAD_HINT}"
    elif "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        fix = "the bucket does not exist: check its name in the URI (and AWS_ENDPOINT_URL, for a server of its own)"
    elif re.search(r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|credential|403", text):
        fix = (
            "the storage refused the credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or give the node a "
            "role) with access to it"
        )
    elif isinstance(exc, ValueError):
        fix = "use a local path or a URI pyarrow.fs supports: s3://, gs://, hdfs://, abfs://, file://"
    else:
        fix = "check the URI, the storage's address (AWS_ENDPOINT_URL for S3-compatible servers) and its credentials"
    return CheckpointError(f"Cannot {action} {uri}: {text.strip()}. Fix: {fix}.")
