"""`multitask classify` on Ray Data: files in, an encoder actor pool, a heads stage, files out, streaming.

    report = classify_dataset(ClassifyJob(input="s3://bucket/tickets/", output="s3://bucket/labelled/"))

    read_parquet / read_json (JSON Lines) / read_csv             every input column, in file order
      -> map_batches(EncoderStage, concurrency=N)                an actor pool; each actor loads the checkpoint's
                                                                 encoder once through `select_runtime`, the runtime
                                                                 the Encoder deployment runs (onnxruntime on CPU,
                                                                 torch + bf16 on a GPU with --gpus-per-encoder)
      -> map_batches(classify_batch)                             the numpy heads the head deployment runs, on
                                                                 CPU: each text encoded once for every task
      -> write_parquet / write_json / write_csv                  in input order (`preserve_order`)

Everything that can be checked is checked on the driver before Ray starts any work (`validate`): the checkpoint
and its tasks, the input files and the first one's columns, the output folder; a bad row is the batch's business
(`rows.py`): kept, with an `error`. Ray Data retries a failed task, and restarts a dead actor and retries its batch.
The local Ray is used unless `address` (or RAY_ADDRESS) names a cluster; then each node locates the checkpoint
(storage URIs: fetched once per node) and, for ONNX runtimes, exports it once into its cache, as Serve replicas do.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from multitask.batch.files import (
    Format,
    InputError,
    InputFiles,
    Location,
    check_columns,
    check_output,
    format_of,
    output_files,
    probe_schema,
    resolve_input,
)
from multitask.batch.rows import ERROR, ResultColumns, classify_table, encode_table
from multitask.checkpoint.manifest import CheckpointManifest, read_manifest
from multitask.config import unknown_task_message
from multitask.runtime.select import Dtype, Runtime
from multitask.storage import locate_checkpoint

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default"


class ClassifyJob(BaseModel):
    """One `multitask classify` run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(description="A file, folder or glob; local path or storage URI.")
    output: str = Field(description="The folder to write; local path or storage URI.")
    checkpoint: str = Field(default=str(DEFAULT_CHECKPOINT), description="Checkpoint folder or storage URI.")
    tasks: tuple[str, ...] | None = Field(default=None, description="Tasks to run; None = every task.")
    text_column: str = "text"
    with_scores: bool = Field(default=False, description="Every label's probability, per task.")
    with_embeddings: bool = Field(default=False, description="The shared embedding (not unit-normalized).")
    input_format: Format | None = Field(default=None, description="None = from the files' extensions.")
    output_format: Format | None = Field(default=None, description="None = from OUTPUT's extension, else the input's.")
    overwrite: bool = False
    runtime: Runtime = Field(default="auto", description="As the Encoder deployment's `runtime` (graph.GraphArgs).")
    dtype: Dtype = "auto"
    gpus_per_encoder: float = Field(default=0.0, ge=0, description="> 0: encoders on GPUs (torch, bf16 by default).")
    cpus_per_encoder: float = Field(default=1.0, gt=0, description="CPUs each encoder actor takes (its threads).")
    encoders: int | None = Field(default=None, gt=0, description="Encoder actors; None = as many as the cluster fits.")
    batch_size: int = Field(default=256, gt=0, description="Rows per encoder call (sorted by length inside it).")
    max_batch_texts: int = Field(default=32, gt=0, description="Texts per forward pass, as the Encoder's setting.")
    max_batch_tokens: int = Field(default=4096, ge=0, description="Padded tokens per forward pass; 0 = no limit.")
    rows_per_file: int = Field(default=50_000, gt=0, description="Rows gathered into each output file (at least).")
    onnx_cache_dir: str | None = None
    checkpoint_cache_dir: str | None = None
    progress: bool = Field(default=True, description="Ray Data's progress bars.")


@dataclass(frozen=True)
class Plan:
    """What `validate` found: everything the run needs, checked."""

    checkpoint: Path  # located on the driver (a URI: fetched)
    manifest: CheckpointManifest
    files: InputFiles
    output: Location
    output_format: Format
    columns: ResultColumns
    rows_in: int | None  # known without reading the data (Parquet footers), else None


@dataclass(frozen=True)
class ClassifyReport:
    rows_in: int | None
    rows_out: int
    rows_with_errors: int
    output_files: list[str]
    seconds: float
    encoders: int

    def as_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_with_errors": self.rows_with_errors,
            "output_files": len(self.output_files),
            "seconds": round(self.seconds, 2),
            "encoders": self.encoders,
        }


def validate(job: ClassifyJob) -> Plan:
    """Every check that needs no Ray and no model: MultitaskError (InputError, CheckpointError) at the first
    problem, before any work starts."""
    checkpoint = locate_checkpoint(job.checkpoint, job.checkpoint_cache_dir)
    manifest = read_manifest(checkpoint)
    available = manifest.model.task_names
    tasks = list(job.tasks) if job.tasks else available
    for task in tasks:
        if task not in available:
            raise InputError(unknown_task_message(task, available))
    if len(set(tasks)) != len(tasks):
        raise InputError(f"--tasks lists {tasks}: name each task once.")
    files = resolve_input(job.input, job.input_format)
    output_format = job.output_format or format_of(job.output) or files.format
    columns = ResultColumns(tuple(tasks), job.with_scores, job.with_embeddings, nested_as_json=output_format == "csv")
    check_columns(probe_schema(files), job.text_column, columns.names(), files)
    output = check_output(job.output, job.overwrite)
    rows_in = _parquet_rows(files) if files.format == "parquet" else None
    return Plan(checkpoint, manifest, files, output, output_format, columns, rows_in)


def _parquet_rows(files: InputFiles) -> int:
    import pyarrow.parquet as pq

    total = 0
    for path in files.paths:
        with files.location.filesystem.open_input_file(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


class EncoderStage:
    """The encoder actor: the checkpoint's encoder, loaded once per actor by `select_runtime` (the Encoder
    deployment's call), run on each batch by `rows.encode_table`."""

    def __init__(self, job: ClassifyJob):
        import ray

        from multitask.runtime.select import select_runtime

        directory = locate_checkpoint(job.checkpoint, job.checkpoint_cache_dir)  # a URI: once per node
        gpu = job.gpus_per_encoder > 0
        self.runtime = select_runtime(
            directory,
            job.runtime,
            "auto" if gpu else "cpu",
            job.dtype,
            job.onnx_cache_dir,
            gpu_assigned=bool(ray.get_gpu_ids()) if gpu else False,
        )
        if not str(self.runtime.device).startswith("cuda"):
            self.runtime.set_threads(max(1, math.floor(job.cpus_per_encoder)))
        self.text_column = job.text_column
        self.max_batch, self.max_tokens = job.max_batch_texts, job.max_batch_tokens

    def __call__(self, batch: pa.Table) -> pa.Table:
        return encode_table(batch, self.text_column, self._forward, self.runtime.embedding_dim)

    def _forward(self, texts: list[str]):
        return self.runtime.forward(texts, max_batch=self.max_batch, max_tokens=self.max_tokens)


@functools.lru_cache(maxsize=4)
def _heads(checkpoint: str, cache_dir: str | None, tasks: tuple[str, ...]) -> dict:
    """The asked tasks' numpy heads, loaded once per worker process (the head deployment's loader)."""
    from multitask.numpy_head import NumpyHead

    directory = locate_checkpoint(checkpoint, cache_dir)
    manifest = read_manifest(directory)
    return {task: NumpyHead.load(directory, task, manifest.encoder.fingerprint, manifest) for task in tasks}


def classify_batch(batch: pa.Table, checkpoint: str, cache_dir: str | None, columns: ResultColumns) -> pa.Table:
    """The heads stage (Ray tasks): `rows.classify_table` with the checkpoint's heads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # the encoders have the cores
        return classify_table(batch, _heads(checkpoint, cache_dir, columns.tasks), columns)


LIGHT_STAGES_CPUS = 1.0
"""CPUs left to the light stages (Ray Data's file listing takes one; reads, heads and writes ask for none)."""


def encoder_count(job: ClassifyJob) -> int:
    """`job.encoders`, or as many encoder actors as the free CPUs (or GPUs) hold, one CPU left for the rest."""
    import ray

    if job.encoders:
        return job.encoders
    free = ray.available_resources()
    if job.gpus_per_encoder > 0:
        return max(1, math.floor(free.get("GPU", 0) / job.gpus_per_encoder))
    return max(1, math.floor((free.get("CPU", 0) - LIGHT_STAGES_CPUS) / job.cpus_per_encoder))


def classify_dataset(job: ClassifyJob, address: str | None = None) -> ClassifyReport:
    """Validate, then run the job on the Ray this process is connected to, else on `address` / RAY_ADDRESS, else
    on a new local Ray (shut down afterwards)."""
    plan = validate(job)
    if job.runtime in ("onnx", "onnx-int8") or (job.runtime == "auto" and job.gpus_per_encoder == 0):
        # exported (once, in a subprocess) on the driver's node before the actors start: a checkpoint whose
        # encoder cannot be exported fails here, not in every actor
        from multitask.runtime.onnx_cache import ensure_export

        precision = "int8" if job.runtime == "onnx-int8" else "float32"
        ensure_export(plan.checkpoint, job.onnx_cache_dir, precision, plan.manifest)
    import ray

    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        # a local Ray of its own: one logical CPU more than the cores, for the light stages, so that every core
        # runs an encoder (their work between passes is small)
        extra = {"num_cpus": (os.cpu_count() or 1) + LIGHT_STAGES_CPUS} if address == "local" else {}
        ray.init(address=address, **extra)
    try:
        return _run(job, plan)
    finally:
        if started:
            ray.shutdown()


def _run(job: ClassifyJob, plan: Plan) -> ClassifyReport:
    import ray
    from ray.data import SaveMode

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows out in the order they came in
    context.enable_progress_bars = job.progress
    start = time.perf_counter()
    encoders = encoder_count(job)
    # reads and heads are cheap, and ask for no CPU: the encoders hold the cores
    light = {"num_cpus": 0.0, "concurrency": min(encoders, len(plan.files.paths))}
    tasks = {"num_cpus": 0.0, "compute": ray.data.TaskPoolStrategy(size=encoders)}
    uris = plan.files.uris
    if plan.files.format == "parquet":
        ds = ray.data.read_parquet(uris, **light)
    elif plan.files.format == "csv":
        import pyarrow.csv

        convert = pyarrow.csv.ConvertOptions(column_types={job.text_column: pa.string()})
        ds = ray.data.read_csv(uris, convert_options=convert, **light)
    else:
        ds = ray.data.read_json(uris, lines=True, **light)  # pandas: a column of mixed types reads, as objects
    ds = ds.repartition(target_num_rows_per_block=job.batch_size)  # one encoder call per block, spread over actors
    ds = ds.map_batches(
        EncoderStage,
        fn_constructor_kwargs={"job": job},
        batch_format="pyarrow",
        batch_size=job.batch_size,
        compute=ray.data.ActorPoolStrategy(size=encoders),  # Ray Data restarts a dead actor, retries its batch
        num_cpus=job.cpus_per_encoder,
        num_gpus=job.gpus_per_encoder or None,
        udf_modifying_row_count=False,
    )
    ds = ds.map_batches(
        classify_batch,
        fn_kwargs={"checkpoint": job.checkpoint, "cache_dir": job.checkpoint_cache_dir, "columns": plan.columns},
        batch_format="pyarrow",
        batch_size=None,
        udf_modifying_row_count=False,
        **tasks,
    )
    out = plan.output
    mode = SaveMode.OVERWRITE if job.overwrite else SaveMode.APPEND
    write = {"filesystem": out.filesystem, "mode": mode, "min_rows_per_file": job.rows_per_file}
    if plan.output_format == "parquet":
        ds.write_parquet(out.path, **write)
    elif plan.output_format == "csv":
        ds.write_csv(out.path, **write)
    else:
        ds.write_json(out.path, double_precision=15, force_ascii=False, **write)
    written = output_files(out)
    rows_out, errors = count_rows(out, written, plan.output_format)
    return ClassifyReport(
        plan.rows_in, rows_out, errors, [out.uri(p) for p in written], time.perf_counter() - start, encoders
    )


def count_rows(out: Location, paths: list[str], format: Format) -> tuple[int, int]:
    """Rows written and rows with an error, read back from the output (only its `error` column, streaming)."""
    import pyarrow.csv
    import pyarrow.dataset

    if not paths:
        return 0, 0
    file_format: object = format
    if format == "csv":  # an empty field is an empty string to pyarrow's CSV reader, unless told otherwise
        file_format = pyarrow.dataset.CsvFileFormat(
            convert_options=pyarrow.csv.ConvertOptions(strings_can_be_null=True)
        )
    dataset = pyarrow.dataset.dataset(paths, format=file_format, filesystem=out.filesystem)
    rows = errors = 0
    for batch in dataset.to_batches(columns=[ERROR]):
        rows += batch.num_rows
        errors += batch.num_rows - batch.column(0).null_count
    return rows, errors
