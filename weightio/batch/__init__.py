"""Whole training runs at once, on a Dask cluster: ``convert`` many checkpoints into archives,
``track`` how a run's layers moved, ``diff_runs`` two runs step by step.

Each file is one Dask task that opens (streams) its own file on a worker; nothing but small
results travels through the scheduler, except the arrays ``track`` hands from a checkpoint's
read to the pairs that compare it (each checkpoint is read once). On one machine a
``LocalCluster`` of worker processes on 127.0.0.1 is started; ``scheduler="tcp://host:8786"``
runs the same on a real cluster whose workers have weightio installed (docs/scale.md).
"""

from __future__ import annotations

from weightio.batch.conversion import BatchReport, FileResult, convert
from weightio.batch.runs import RunDiff, diff_runs
from weightio.batch.tracking import TrackReport, track

__all__ = ["BatchReport", "FileResult", "RunDiff", "TrackReport", "convert", "diff_runs", "track"]
