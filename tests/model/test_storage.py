"""Checkpoints from storage URIs, against a real S3-compatible server on 127.0.0.1 (moto's server mode; no mock of
the client): upload and fetch, the node-local cache keyed by content, one download for concurrent fetchers, nothing
half-written ever used, errors that name the URI and the fix, `file://`, and `multitask upload` / `train --output`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.fs
import pytest

from multitask.checkpoint.check import check_checkpoint
from multitask.checkpoint.format import MODEL_FILE
from multitask.checkpoint.load import load_model, save_checkpoint
from multitask.cli import main
from multitask.errors import CheckpointError
from multitask.storage import DIGEST_FILE, checkpoint_name, is_uri, locate_checkpoint, upload_checkpoint
from tests.support.paths import ROOT
from tests.support.s3_server import s3_server
from tests.support.tiny_tasks import SENTIMENT_PROBES, tiny_config_dict


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def bucket(s3) -> str:
    return s3.create_bucket("checkpoints")


@pytest.fixture(scope="module")
def local_checkpoint(minilm_model, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("storage") / "ckpt"
    save_checkpoint(minilm_model, directory, metrics={"topic": {"test": {"macro_f1": 0.5}}})
    return directory


def _remote(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(uri)


def _write_remote(uri: str, data: bytes) -> None:
    fs, path = _remote(uri)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def _staging_left(cache: Path) -> list[Path]:
    return list(cache.glob(".staging-*"))


def test_upload_then_fetch_gives_the_same_checkpoint_that_passes_the_check(s3, bucket, local_checkpoint, tmp_path):
    uri = f"{bucket}/round-trip/v1"
    upload_checkpoint(local_checkpoint, uri)
    fetched = locate_checkpoint(uri, tmp_path / "cache")

    assert fetched.parent == tmp_path / "cache"
    assert check_checkpoint(fetched).model.task_names == ["topic", "sentiment"]
    for name in ("config.json", MODEL_FILE):
        assert (fetched / name).read_bytes() == (local_checkpoint / name).read_bytes()
    assert load_model(fetched).predict(["a fine day"])[0].keys() == {"topic", "sentiment"}
    assert s3.gets("/round-trip/v1/" + MODEL_FILE) >= 1  # it really came over HTTP from the server


def test_a_second_fetch_hits_the_cache_without_downloading(s3, bucket, local_checkpoint, tmp_path):
    uri = f"{bucket}/cached/v1"
    upload_checkpoint(local_checkpoint, uri)
    first = locate_checkpoint(uri, tmp_path / "cache")
    downloads = s3.gets("/cached/v1/" + MODEL_FILE)
    digest_reads = s3.gets("/cached/v1/" + DIGEST_FILE)

    assert locate_checkpoint(uri + "/", tmp_path / "cache") == first
    assert s3.gets("/cached/v1/" + MODEL_FILE) == downloads  # no new download
    assert s3.gets("/cached/v1/" + DIGEST_FILE) == digest_reads + 1  # only the small digest file was read


def test_the_same_content_under_another_uri_shares_the_cache_entry(bucket, local_checkpoint, tmp_path):
    upload_checkpoint(local_checkpoint, f"{bucket}/twin/a")
    upload_checkpoint(local_checkpoint, f"{bucket}/twin/b")
    assert locate_checkpoint(f"{bucket}/twin/a", tmp_path) == locate_checkpoint(f"{bucket}/twin/b", tmp_path)


FETCHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from multitask.storage import locate_checkpoint
    go = Path(sys.argv[3])
    Path(sys.argv[4]).touch()  # imported, ready
    while not go.exists():
        time.sleep(0.01)
    print(locate_checkpoint(sys.argv[1], sys.argv[2]))
    """
)


def test_processes_fetching_at_once_download_once(s3, bucket, local_checkpoint, tmp_path):
    """Replicas starting together on one node: one downloads, the others wait for its lock and reuse its folder."""
    uri = f"{bucket}/concurrent/v1"
    upload_checkpoint(local_checkpoint, uri)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fetchers = [
        subprocess.Popen(
            [sys.executable, "-c", FETCHER, uri, str(tmp_path / "cache"), str(go), str(tmp_path / f"ready-{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(fetchers):  # every process imported, waiting for the signal
        assert time.monotonic() < deadline, "the fetcher processes did not start"
        time.sleep(0.05)
    go.touch()
    results = [fetcher.communicate(timeout=120) for fetcher in fetchers]
    assert all(fetcher.returncode == 0 for fetcher in fetchers), [err for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # the same folder for all

    concurrent_gets = s3.gets("/concurrent/v1/" + MODEL_FILE)
    locate_checkpoint(uri, tmp_path / "solo-cache")  # what one download costs
    assert concurrent_gets == s3.gets("/concurrent/v1/" + MODEL_FILE) - concurrent_gets >= 1
    assert not _staging_left(tmp_path / "cache")


def test_a_file_damaged_after_the_upload_is_never_published(bucket, local_checkpoint, tmp_path):
    uri = f"{bucket}/damaged/v1"
    upload_checkpoint(local_checkpoint, uri)
    data = bytearray((local_checkpoint / MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF  # same size, other content: only the SHA-256 tells
    _write_remote(f"{uri}/{MODEL_FILE}", bytes(data))
    cache = tmp_path / "cache"

    with pytest.raises(CheckpointError, match=f"{uri}/{MODEL_FILE} is not the file expected.*Upload the checkpoint"):
        locate_checkpoint(uri, cache)
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []  # nothing published
    assert not _staging_left(cache)  # and nothing half-written left behind


def test_a_half_uploaded_checkpoint_without_its_digest_file_is_refused_naming_the_uri(
    bucket, local_checkpoint, tmp_path
):
    """An upload that died midway: the digest file (written last) and the weights are not there yet."""
    uri = f"{bucket}/half/v1"
    upload_checkpoint(local_checkpoint, uri)
    fs, path = _remote(uri)
    fs.delete_file(f"{path}/{DIGEST_FILE}")
    fs.delete_file(f"{path}/{MODEL_FILE}")

    with pytest.raises(CheckpointError, match=f"{uri}/{MODEL_FILE} is missing"):
        locate_checkpoint(uri, tmp_path / "cache")
    assert not _staging_left(tmp_path / "cache")


def test_a_checkpoint_copied_by_hand_without_digest_file_works_and_is_cached(s3, bucket, local_checkpoint, tmp_path):
    uri = f"{bucket}/by-hand/v1"
    upload_checkpoint(local_checkpoint, uri)
    fs, path = _remote(uri)
    fs.delete_file(f"{path}/{DIGEST_FILE}")  # as `aws s3 cp --recursive` would have left it

    first = locate_checkpoint(uri, tmp_path / "cache")
    assert check_checkpoint(first).model.task_names == ["topic", "sentiment"]
    downloads = s3.gets("/by-hand/v1/" + MODEL_FILE)
    assert locate_checkpoint(uri, tmp_path / "cache") == first  # the unchanged listing is remembered
    assert s3.gets("/by-hand/v1/" + MODEL_FILE) == downloads


def test_leftovers_of_a_killed_download_are_never_used(bucket, local_checkpoint, tmp_path):
    """A process killed mid-download leaves a staging folder; a cache folder someone emptied by hand is incomplete.
    Neither is served: the next fetch downloads again and publishes a whole folder."""
    uri = f"{bucket}/killed/v1"
    upload_checkpoint(local_checkpoint, uri)
    cache = tmp_path / "cache"
    published = locate_checkpoint(uri, cache)
    (published / MODEL_FILE).write_bytes(b"half")  # a truncated file in the published folder
    stale = cache / f".staging-{published.name}-dead"
    stale.mkdir()
    (stale / MODEL_FILE).write_bytes(b"partial")

    again = locate_checkpoint(uri, cache)
    assert again == published
    assert (again / MODEL_FILE).read_bytes() == (local_checkpoint / MODEL_FILE).read_bytes()
    assert not stale.exists()


def test_missing_key_bucket_or_checkpoint_are_named_with_the_fix(bucket, tmp_path):
    with pytest.raises(CheckpointError, match=f"Nothing is stored at {bucket}/no/such/key.*multitask upload"):
        locate_checkpoint(f"{bucket}/no/such/key", tmp_path)
    with pytest.raises(CheckpointError, match="s3://no-such-bucket/x.*the bucket does not exist"):
        locate_checkpoint("s3://no-such-bucket/x", tmp_path)
    _write_remote(f"{bucket}/not-a-checkpoint/notes.txt", b"hello")
    with pytest.raises(CheckpointError, match=f"{bucket}/not-a-checkpoint holds no config.json"):
        locate_checkpoint(f"{bucket}/not-a-checkpoint", tmp_path)
    with pytest.raises(CheckpointError, match="foo://x.*URI pyarrow.fs supports"):
        locate_checkpoint("foo://x/y", tmp_path)


def test_upload_refuses_what_is_not_a_checkpoint(bucket, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        upload_checkpoint(tmp_path / "nothing", f"{bucket}/nothing")


def test_file_uris_take_the_same_path(local_checkpoint, tmp_path):
    uri = (tmp_path / "storage" / "ckpt").as_uri()
    upload_checkpoint(local_checkpoint, uri)
    fetched = locate_checkpoint(uri, tmp_path / "cache")
    assert fetched.parent == tmp_path / "cache" and check_checkpoint(fetched)
    assert json.loads((tmp_path / "storage" / "ckpt" / DIGEST_FILE).read_text())["files"][MODEL_FILE]["size"] > 0


def test_paths_resolve_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert locate_checkpoint("checkpoints/default") == ROOT / "checkpoints" / "default"  # project root
    (tmp_path / "checkpoints" / "default").mkdir(parents=True)
    assert locate_checkpoint("checkpoints/default") == tmp_path / "checkpoints" / "default"  # working directory
    assert locate_checkpoint("/abs/ckpt") == Path("/abs/ckpt")
    assert [is_uri(x) for x in ("s3://b/k", "file:///x", "checkpoints/default", "/mnt/x")] == [True, True, False, False]
    assert checkpoint_name("s3://b/ckpts/v3/") == checkpoint_name("/mnt/ckpts/v3") == "v3"


def test_cli_upload_and_predict_from_a_uri(bucket, local_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("multitask.storage.CHECKPOINT_CACHE_DIR", tmp_path / "cache")  # the CLI takes the default
    uri = f"{bucket}/cli/v1"
    assert main(["upload", str(local_checkpoint), uri]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", uri, "--task", "topic", "the match ended in a draw"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert set(result) == {"text", "topic"}
    assert main(["upload", str(local_checkpoint), str(tmp_path / "not-a-uri")]) == 2


def test_cli_train_writes_its_checkpoint_to_a_uri(bucket, tmp_path, capsys):
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, mode="frozen")))
    uri = f"{bucket}/trained/tiny"
    assert main(["train", "--config", str(config), "--output", uri, "--no-progress"]) == 0
    out = capsys.readouterr().out  # epoch lines, then the JSON summary
    assert json.loads(out[out.index('{\n  "checkpoint"') :])["checkpoint"] == uri
    assert not (tmp_path / "ckpt").exists()  # the config's output_dir was not written

    model = load_model(locate_checkpoint(uri, tmp_path / "cache"))
    assert [r["sentiment"]["label"] for r in model.predict(list(SENTIMENT_PROBES.values()))] == list(SENTIMENT_PROBES)


def test_cli_storage_path_needs_ray_train_workers(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "x.yaml"), "--storage-path", "s3://b/runs"])
    assert "--num-workers" in capsys.readouterr().err
