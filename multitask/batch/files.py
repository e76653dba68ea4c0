"""The input and output of `multitask classify`, checked before any work starts: which files (a file, a folder, a
glob; local or a storage URI), their format, the columns of the first one (read cheaply: a Parquet footer, the first
block of a CSV or JSON Lines file), and an output that would not mix with older files.

    files = resolve_input("s3://bucket/tickets/*.parquet")        # InputFiles: paths, format, filesystem
    schema = probe_schema(files)                                   # the first file's columns
    check_columns(schema, "text", ["topic_label", ...], files)    # MultitaskError if the column is absent, ...

URIs go through `pyarrow.fs` (s3://, gs://, file://, ...), as checkpoints do (`multitask/storage.py`): S3 takes its
endpoint and credentials from the standard AWS variables.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.csv
import pyarrow.fs
import pyarrow.parquet as pq

from multitask.errors import MultitaskError
from multitask.storage import is_uri

Format = Literal["parquet", "json", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "json", "csv")
EXTENSIONS: dict[str, Format] = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".ndjson": "json",
    ".csv": "csv",
}
PROBE_BYTES = 1 << 20
"""How much of a JSON Lines file is read to learn its columns."""


class InputError(MultitaskError):
    """An input or output that cannot be used: missing, unreadable, of an unknown format, without the text column."""


@dataclass(frozen=True)
class Location:
    """A local path or a storage URI, with the filesystem that reaches it and its path there."""

    filesystem: pyarrow.fs.FileSystem
    path: str  # in `filesystem` (for S3: bucket/key)
    scheme: str  # "" for local paths

    def uri(self, path: str) -> str:
        """A path of this filesystem as Ray Data takes it: the URI, or the absolute local path."""
        return f"{self.scheme}://{path}" if self.scheme else path


@dataclass(frozen=True)
class InputFiles:
    location: Location
    paths: list[str]  # in location.filesystem, sorted (the output keeps this order)
    format: Format

    @property
    def uris(self) -> list[str]:
        return [self.location.uri(path) for path in self.paths]


def locate(location: str) -> Location:
    """`location`'s filesystem and path; a storage error is an InputError naming it."""
    if not is_uri(location) or location.startswith("file://"):
        path = location.removeprefix("file://")
        return Location(pyarrow.fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path)), "")
    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"Cannot open {location!r}: {exc}") from exc
    return Location(filesystem, path, location.split("://", 1)[0])


def format_of(name: str) -> Format | None:
    return EXTENSIONS.get(os.path.splitext(name.rstrip("/"))[1].lower())


def resolve_input(location: str, format: Format | None = None) -> InputFiles:
    """The input files: `location` itself, the data files under a folder (recursively; names starting with `.` or
    `_` skipped, as Spark's and Ray's markers), or those a glob (`*`, `?`, `[...]` in the last parts) matches."""
    where = locate(location)
    fs = where.filesystem
    try:
        if any(ch in where.path for ch in "*?["):
            base = where.path[: min(where.path.find(ch) for ch in "*?[" if ch in where.path)].rsplit("/", 1)[0]
            listed = _list_files(fs, base) if fs.get_file_info(base).type == pyarrow.fs.FileType.Directory else []
            paths = [path for path in listed if _glob_match(path, where.path)]
        else:
            info = fs.get_file_info(where.path)
            if info.type == pyarrow.fs.FileType.NotFound:
                raise InputError(f"Input {location!r} does not exist.")
            paths = _list_files(fs, where.path) if info.type == pyarrow.fs.FileType.Directory else [where.path]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"Cannot list input {location!r}: {exc}") from exc
    if format is None:
        found = {format_of(path) for path in paths} - {None}
        if len(found) > 1:
            raise InputError(f"Input {location!r} holds files of several formats {sorted(found)}; pass --input-format.")
        if not found:
            raise InputError(
                f"No Parquet, JSON Lines or CSV files in {location!r} (by extension: {sorted(EXTENSIONS)}); "
                "pass --input-format if they have other names."
            )
        format = found.pop()
    paths = sorted(path for path in paths if len(paths) == 1 or format_of(path) in (format, None))
    if not paths:
        raise InputError(f"No {format} files in {location!r}.")
    return InputFiles(where, paths, format)


def _glob_match(path: str, pattern: str) -> bool:
    """Shell-style, one folder level per part (`*` does not cross a `/`)."""
    parts, patterns = path.split("/"), pattern.split("/")
    return len(parts) == len(patterns) and all(map(fnmatch.fnmatchcase, parts, patterns))


def _list_files(fs: pyarrow.fs.FileSystem, directory: str) -> list[str]:
    selector = pyarrow.fs.FileSelector(directory, recursive=True)
    return [
        info.path
        for info in fs.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.File
        and not any(part.startswith((".", "_")) for part in info.path[len(directory) :].split("/"))
    ]


def probe_schema(files: InputFiles) -> pa.Schema:
    """The columns of the first input file, from its first bytes (Parquet: its footer)."""
    path, fs = files.paths[0], files.location.filesystem
    try:
        if files.format == "parquet":
            with fs.open_input_file(path) as f:
                return pq.read_schema(f)
        if files.format == "csv":
            with fs.open_input_stream(path) as f:
                return pyarrow.csv.open_csv(f).schema
        with fs.open_input_stream(path) as f:
            head = f.read(PROBE_BYTES)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"Cannot read {files.location.uri(path)} as {files.format}: {exc}") from exc
    return _json_lines_schema(head, files.location.uri(path))


def _json_lines_schema(head: bytes, name: str) -> pa.Schema:
    """The columns named by the first JSON Lines rows (types as Ray Data's pandas reader would see them: mixed types
    are objects, whose rows `rows.py` handles)."""
    lines = head.split(b"\n")
    if len(head) == PROBE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    columns: dict[str, pa.DataType] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}, line {number}: not JSON ({exc}); JSON input must be JSON Lines.") from exc
        if not isinstance(row, dict):
            raise InputError(f"{name}, line {number}: a JSON {type(row).__name__}, not an object with columns.")
        for key, value in row.items():
            kind = pa.string() if isinstance(value, str) or value is None else pa.null()
            columns[key] = pa.string() if columns.get(key) == pa.string() else kind
    if not columns:
        raise InputError(f"{name} holds no JSON rows.")
    return pa.schema(list(columns.items()))


def check_columns(schema: pa.Schema, text_column: str, added: list[str], files: InputFiles) -> None:
    """The text column is there and holds text; no result column would overwrite an input column."""
    first = files.location.uri(files.paths[0])
    if text_column not in schema.names:
        raise InputError(
            f"No column {text_column!r} in {first} (columns: {schema.names}); name the text column with --text-column."
        )
    kind = schema.field(text_column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    texts = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
    if files.format != "json" and not (texts or pa.types.is_string_view(kind)):
        raise InputError(f"Column {text_column!r} of {first} holds {kind}, not text.")
    clashes = [name for name in added if name in schema.names]
    if clashes:
        raise InputError(f"{first} already has columns {clashes}, which classify adds; rename them first.")


def check_output(location: str, overwrite: bool) -> Location:
    """The output folder: it must not hold files already (their rows would mix with these), unless `overwrite`."""
    where = locate(location)
    try:
        info = where.filesystem.get_file_info(where.path)
        if info.type == pyarrow.fs.FileType.File:
            raise InputError(f"Output {location!r} is a file; classify writes a folder of files.")
        listing = pyarrow.fs.FileSelector(where.path, recursive=False)
        if info.type == pyarrow.fs.FileType.Directory and not overwrite and where.filesystem.get_file_info(listing):
            raise InputError(f"Output {location!r} already holds files; pass --overwrite to replace them.")
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"Cannot check output {location!r}: {exc}") from exc
    return where


def output_files(where: Location) -> list[str]:
    """The files a run wrote, in output order (Ray Data names them by write-task index)."""
    return sorted(_list_files(where.filesystem, where.path))
