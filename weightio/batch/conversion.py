"""``weightio.batch.convert``: many checkpoints into archives, one Dask task per file.

Each task runs on a worker and does what ``weightio convert SOURCE OUT/NAME.safetensors`` does,
through the same function (``weightio.verbs.convert.convert``), so each archive is the one the
one-at-a-time path writes, bit for bit, given the same creation time: the client's
``SOURCE_DATE_EPOCH``, when set, is carried to every task (``format.provenance.fixed_time``).

- **Per file, a result or a typed error.** A task never raises for its file: a ``WeightioError``
  becomes that file's error (class, message, exit code), anything else too (named as an internal
  error), and the other files go on.
- **Resumable.** With ``resume`` (the default), an archive already in OUT whose recorded source
  digest is that of the source now (same algorithm) is kept and reported ``skipped``; a stale or
  unreadable one is converted again.
- **Atomic per file.** Archives are written by the atomic writer (temp file, fsync, rename), or,
  at a URL, made whole locally and then uploaded. A task first removes the temp files an earlier
  attempt at its own archive left (a worker killed mid-write); the scheduler re-runs the task of
  a worker that died, up to ``distributed.scheduler.allowed-failures`` times, then that file is
  reported as a ``KilledWorker`` error. When the batch ends, no temp file of its archives is left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from weightio.batch.cluster import dask_client, local_workers
from weightio.batch.sources import destinations, expand
from weightio.errors import WeightioError, WriteError
from weightio.format import remote
from weightio.format.atomic import TEMP_MARKER
from weightio.format.hashing import check_algorithm
from weightio.format.provenance import epoch_time, fixed_time
from weightio.options import check_count, check_seed

BATCH_FORMAT = "weightio.batch/1"

Status = Literal["converted", "skipped", "failed"]


class FileError(BaseModel):
    """Why one file failed: the error's class (``MalformedFileError`` …), message and exit code."""

    type: str
    message: str
    exit_code: int


class FileResult(BaseModel):
    """What became of one source."""

    source: str
    destination: str
    status: Status
    seconds: float = Field(description="Time the task took on its worker.")
    source_bytes: int | None = None
    archive_bytes: int | None = None
    source_digest: str | None = None
    worker: str | None = Field(default=None, description="Address of the worker that ran it.")
    error: FileError | None = None


class BatchReport(BaseModel):
    """The result of ``weightio.batch.convert``; ``to_json()`` gives the stable JSON shape."""

    format: Literal["weightio.batch/1"] = BATCH_FORMAT
    out: str
    scheduler: str = Field(description="'local' or the scheduler's address.")
    workers: int
    seconds: float = Field(description="Wall time of the whole batch.")
    counts: dict[str, int]
    source_bytes: int = Field(description="Bytes of the sources converted (skipped ones not counted).")
    bytes_per_second: float | None
    files: list[FileResult]

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return self.counts.get("failed", 0) == 0

    def failed(self) -> list[FileResult]:
        """The files that failed."""
        return [f for f in self.files if f.status == "failed"]

    def to_json(self, *, indent: int | None = 2) -> str:
        """The documented JSON shape (docs/scale.md)."""
        return self.model_dump_json(indent=indent)


@dataclass(frozen=True)
class Job:
    """One file's task, as sent to a worker (small: paths and options, never data)."""

    source: str
    destination: str
    resume: bool
    digest: str
    created_at: str | None
    convert_options: dict[str, Any] = field(default_factory=dict)


def error_of(exc: BaseException) -> FileError:
    """A file's error as a result carries it: a ``WeightioError``'s class, or an internal error."""
    if isinstance(exc, WeightioError):
        return FileError(type=type(exc).__name__, message=str(exc), exit_code=exc.exit_code)
    return FileError(type=type(exc).__name__, message=f"internal error: {exc}", exit_code=1)


def _worker_address() -> str | None:
    with contextlib.suppress(Exception):
        from distributed import get_worker

        return str(get_worker().address)
    return None


def remove_own_temps(destination: str) -> list[Path]:
    """Remove the temp files of earlier attempts at ``destination`` (a killed worker's).

    Only this target's (``.NAME.weightio-tmp-*``), whatever their age: a batch has one task per
    archive, so a temp file of it that exists when its task starts is a dead attempt's.
    """
    local = remote.local_path(destination)
    if local is None:
        return []  # an upload that never completed leaves no object
    prefix = f".{local.name}{TEMP_MARKER}"
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(local.parent):
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def recorded_source_digest(destination: str) -> str | None:
    """The source digest an existing archive records, or None (no archive, or unreadable)."""
    from weightio.format.store import load

    target = remote.as_local(destination)
    with contextlib.suppress(WeightioError, OSError):
        if remote.is_remote(target) and not remote.exists(str(target)):
            return None
        if not remote.is_remote(target) and not Path(target).is_file():
            return None
        archive = remote.open_archive(str(target)) if remote.is_remote(target) else load(target)
        provenance = archive.spec.provenance
        return provenance.recorded_source_digest() if provenance is not None else None
    return None


def _source_bytes(local: str | os.PathLike[str]) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(local).st_size
    return None


def _archive_bytes(destination: str) -> int | None:
    with contextlib.suppress(WeightioError, OSError):
        target = remote.as_local(destination)
        return remote.size(str(target)) if remote.is_remote(target) else os.stat(target).st_size
    return None


def convert_one(job: Job) -> FileResult:
    """One file's task (runs on a worker): resume check, conversion, or the file's typed error."""
    from weightio.format.hashing import file_digest
    from weightio.verbs.convert import convert as convert_file

    started = time.perf_counter()
    worker = _worker_address()
    base = {"source": job.source, "destination": job.destination, "worker": worker}
    staging: Path | None = None
    try:
        with fixed_time(job.created_at):
            remove_own_temps(job.destination)
            source: str | os.PathLike[str] = remote.as_local(job.source)
            if remote.is_remote(source):
                staging = remote.staged(str(source))  # read where it can be mapped, once
                source = staging
            size = _source_bytes(source)
            if job.resume:
                recorded = recorded_source_digest(job.destination)
                if recorded is not None and recorded.startswith(job.digest + ":"):
                    now = file_digest(source, job.digest)
                    if now == recorded:
                        return FileResult(status="skipped", seconds=time.perf_counter() - started,
                                          source_bytes=size, archive_bytes=_archive_bytes(job.destination),
                                          source_digest=recorded, **base)
            result = convert_file(source, job.destination, to="archive", digest=job.digest,
                                  **job.convert_options)
            provenance = result.archive.spec.provenance
            return FileResult(
                status="converted", seconds=time.perf_counter() - started, source_bytes=size,
                archive_bytes=_archive_bytes(job.destination),
                source_digest=provenance.recorded_source_digest() if provenance else None, **base,
            )
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the others
        return FileResult(status="failed", seconds=time.perf_counter() - started,
                          error=error_of(exc), **base)
    finally:
        if staging is not None:
            import shutil

            shutil.rmtree(staging.parent, ignore_errors=True)


def _prepare_out(out: str | os.PathLike[str]) -> str:
    text = os.fspath(out)
    local = remote.local_path(text)
    if local is None:
        return text
    if local.exists() and not local.is_dir():
        raise WriteError("--out must be a folder (archives are written into it)", file=local)
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create the output folder ({exc.strerror})", file=local) from None
    return str(local)


def _client_created_at() -> str | None:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return epoch_time(epoch) if epoch else None


def convert(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    resume: bool = True,
    digest: str | None = None,
    verify: bool = True,
    seed: int = 0,
    samples: int = 8,
    on_result: Callable[[FileResult], None] | None = None,
    **options: Any,
) -> BatchReport:
    """Convert every checkpoint ``sources`` name into an archive in ``out``, on a Dask cluster.

    Args:
        sources: Files, folders, globs or URLs (``weightio.batch.sources``).
        out: The folder (or URL of one) the archives go into, as ``NAME.safetensors``.
        scheduler: ``"tcp://host:8786"`` to run on that cluster; ``None`` starts a
            ``LocalCluster`` of worker processes on 127.0.0.1 for the batch.
        workers: Worker processes of the local cluster (default: one per core, at most one a
            file).
        resume: Keep an archive whose recorded source digest is the source's (``skipped``).
        digest: ``"blake3"`` (default) or ``"sha256"``, as ``weightio.convert``.
        verify, seed, samples: As ``weightio.convert``.
        on_result: Called on the client with each file's result as it arrives.
        **options: Reader options for every file (``key=``, ``architecture=``, ``trust_pickle=``,
            ``atol=``, ``rtol=``).

    Returns:
        A ``BatchReport``: one ``FileResult`` per source, in the order of ``sources``.

    Raises:
        InvalidInputError: nothing matched, or two sources would write one archive.
        ClusterError, MissingFrameworkError: no cluster (see ``weightio.batch.cluster``).
    """
    algorithm = check_algorithm(digest)
    seed = check_seed(seed)
    samples = check_count("samples", samples)
    if workers is not None:
        local_workers(workers, 1)  # a bad count fails before anything is listed
    files = expand(sources)
    targets = destinations(files, os.fspath(out))
    out_text = _prepare_out(out)
    created_at = _client_created_at()
    convert_options = {"verify": verify, "seed": seed, "samples": samples, **options}
    jobs = [Job(s, d, resume, algorithm, created_at, convert_options) for s, d in zip(files, targets)]
    started = time.perf_counter()
    results: dict[int, FileResult] = {}
    token = secrets.token_hex(4)
    with dask_client(scheduler, workers=workers, jobs=len(jobs)) as client:
        from distributed import as_completed

        count = len(client.nthreads())
        futures = {
            client.submit(convert_one, job, key=f"weightio-convert-{index:05d}-{token}", pure=False):
            index for index, job in enumerate(jobs)
        }
        for future in as_completed(futures):
            index = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker after too many worker deaths
                job = jobs[index]
                result = FileResult(source=job.source, destination=job.destination, status="failed",
                                    seconds=0.0, error=error_of(exc))
            results[index] = result
            if on_result is not None:
                on_result(result)
            future.release()
    for target in targets:  # every task is done: a temp file of ours left now is a dead attempt's
        remove_own_temps(target)
    seconds = time.perf_counter() - started
    ordered = [results[i] for i in range(len(jobs))]
    counts = {status: sum(1 for r in ordered if r.status == status)
              for status in ("converted", "skipped", "failed")}
    moved = sum(r.source_bytes or 0 for r in ordered if r.status == "converted")
    return BatchReport(
        out=out_text, scheduler=scheduler or "local", workers=count, seconds=seconds,
        counts=counts, source_bytes=moved, bytes_per_second=moved / seconds if seconds > 0 else None,
        files=ordered,
    )
