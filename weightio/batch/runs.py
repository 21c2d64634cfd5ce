"""``weightio.batch.diff_runs``: two training runs compared step by step (``weightio diff A/ B/``).

Each run's checkpoints are read once (one Dask task each, steps as in ``track``), paired by
step, and each pair compared as one Dask task with the streamed comparison of ``weightio diff``:
per layer ‖B − A‖ / ‖A‖ over its tensors. Steps only one run holds are listed, unreadable
checkpoints reported with their typed error. Two runs are identical when every common step is
bit-identical in every layer (a rerun with the same seed and a deterministic pipeline is).
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Literal

from pydantic import BaseModel, Field

from weightio.batch.cluster import dask_client, local_workers
from weightio.batch.sources import expand, step_from_name
from weightio.batch.tracking import Checkpoint, Info, info_task, load_task, pair_task
from weightio.errors import InvalidInputError

RUN_DIFF_FORMAT = "weightio.rundiff/1"


class LayerDelta(BaseModel):
    """One layer at one step: B against A."""

    name: str
    relative_l2: float | None = Field(description="‖B − A‖ / ‖A‖; None if the shapes differ.")
    diff_l2: float | None
    identical: bool


class StepDiff(BaseModel):
    """One step both runs hold."""

    step: int
    a: str
    b: str
    identical: bool
    layers: list[LayerDelta]
    only_a: list[str] = Field(description="Layers only run A's checkpoint holds.")
    only_b: list[str]


class RunDiff(BaseModel):
    """The result of ``weightio.batch.diff_runs``; ``to_json()`` gives the stable JSON shape."""

    format: Literal["weightio.rundiff/1"] = RUN_DIFF_FORMAT
    a: str
    b: str
    identical: bool = Field(description="Every common step bit-identical, and no step missing.")
    steps: list[StepDiff]
    only_a: list[int] = Field(description="Steps only run A holds.")
    only_b: list[int]
    most_different: str | None = Field(description="'step S, layer L' of the largest ‖B − A‖ / ‖A‖.")
    errors: list[Checkpoint]

    def layer_names(self) -> list[str]:
        """Every layer named at any step, in first-seen order."""
        names: dict[str, None] = {}
        for step in self.steps:
            for layer in step.layers:
                names.setdefault(layer.name)
        return list(names)

    def to_json(self, *, indent: int | None = 2) -> str:
        """The documented JSON shape (docs/scale.md)."""
        return self.model_dump_json(indent=indent)


def _by_step(infos: list[Info], indices: list[int], run: str) -> dict[int, int]:
    found: dict[int, int] = {}
    for i in indices:
        step = infos[i].step
        if step in found:
            raise InvalidInputError(f"run {run!r} has several checkpoints of step {step}")
        found[step] = i  # type: ignore[index]
    return found


def diff_runs(
    run_a: str | os.PathLike[str],
    run_b: str | os.PathLike[str],
    *,
    step_from: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    **options: Any,
) -> RunDiff:
    """Compare two runs' checkpoints step by step (see the module docstring).

    Args:
        run_a, run_b: Each a folder, glob or URL of one run's checkpoints.
        step_from: Take each step from this checkpoint entry instead of the file name.
        scheduler, workers: As ``weightio.batch.convert``.
        **options: Reader options for every checkpoint.

    Raises:
        InvalidInputError: no step in common, or a run with two checkpoints of one step.
    """
    if workers is not None:
        local_workers(workers, 1)
    files_a, files_b = expand([run_a]), expand([run_b])
    files = files_a + files_b
    if step_from is None:
        for source in files:
            step_from_name(source)
    token = secrets.token_hex(4)
    with dask_client(scheduler, workers=workers, jobs=len(files)) as client:
        loads = [client.submit(load_task, source, step_from, options, 0.0, pure=False,
                               key=f"weightio-read-{i:05d}-{token}") for i, source in enumerate(files)]
        infos: list[Info] = client.gather([client.submit(info_task, f, key=f"weightio-info-{i:05d}-{token}")
                                           for i, f in enumerate(loads)])
        errors = [Checkpoint(source=info.source, step=info.step, error=info.error)
                  for info in infos if info.error is not None]
        good = [i for i, info in enumerate(infos) if info.error is None]
        steps_a = _by_step(infos, [i for i in good if i < len(files_a)], os.fspath(run_a))
        steps_b = _by_step(infos, [i for i in good if i >= len(files_a)], os.fspath(run_b))
        common = sorted(set(steps_a) & set(steps_b))
        if not common:
            raise InvalidInputError(
                f"the runs have no step in common (A: {sorted(steps_a)[:8]}, B: {sorted(steps_b)[:8]})")
        pairs = [client.submit(pair_task, loads[steps_a[s]], loads[steps_b[s]], priority=-k,
                               key=f"weightio-pair-run-{k:05d}-{token}") for k, s in enumerate(common)]
        del loads
        figures = client.gather(pairs)
    steps = []
    worst: tuple[float, str] | None = None
    for step, found in zip(common, figures):
        info_a, info_b = infos[steps_a[step]], infos[steps_b[step]]
        layers = []
        for name in info_a.layers:
            if name not in info_b.layers:
                continue
            f = found.get(name)
            if f is None:
                layers.append(LayerDelta(name=name, relative_l2=None, diff_l2=None, identical=False))
                continue
            diff, norm_a, _ = f
            relative = diff / norm_a if norm_a > 0 else (0.0 if diff == 0 else None)
            layers.append(LayerDelta(name=name, relative_l2=relative, diff_l2=diff, identical=diff == 0))
            if relative is not None and diff > 0 and (worst is None or relative > worst[0]):
                worst = (relative, f"step {step}, layer {name}")
        only_a = [n for n in info_a.layers if n not in info_b.layers]
        only_b = [n for n in info_b.layers if n not in info_a.layers]
        steps.append(StepDiff(step=step, a=info_a.source, b=info_b.source, layers=layers,
                              only_a=only_a, only_b=only_b,
                              identical=not only_a and not only_b and all(x.identical for x in layers)))
    only_steps_a = sorted(set(steps_a) - set(steps_b))
    only_steps_b = sorted(set(steps_b) - set(steps_a))
    return RunDiff(
        a=os.fspath(run_a), b=os.fspath(run_b), steps=steps, only_a=only_steps_a, only_b=only_steps_b,
        identical=all(s.identical for s in steps) and not only_steps_a and not only_steps_b and not errors,
        most_different=None if worst is None else worst[1], errors=errors,
    )
