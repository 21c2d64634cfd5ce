"""``weightio.batch.track``: a training run's trajectory, layer by layer, from its checkpoints.

Checkpoints are ordered by step: the last number in each file name, or with ``step_from`` an
entry of the checkpoint itself (a ``.pt`` training checkpoint's ``{"step": 500, …}``, or a
safetensors file's ``__metadata__`` key). For each layer (all its tensors taken together as one
vector ``W``, in float64) and each checkpoint ``i``:

- ``from_first`` = ‖Wᵢ − W₀‖ / ‖W₀‖, the relative change since the first checkpoint;
- ``from_previous`` = ‖Wᵢ − Wᵢ₋₁‖ / ‖Wᵢ₋₁‖, the relative change since the one before;
- ``update_ratio`` = ‖Wᵢ − Wᵢ₋₁‖ / ‖Wᵢ‖, the update norm over the weight norm (the ratio an SGD
  run keeps near 1e-3 per step when the learning rate suits the layer: far below, the layer
  barely learns; far above, it is unstable). Between checkpoints k steps apart it sums k updates;
- ``dead_units``: units (rows of the layer's weight along its first, output axis, with their bias
  entry) whose weights are all zero (``|w| <= dead_atol``).

A layer has **stopped** at step s when every checkpoint after s changed it by at most
``stopped_rtol`` (relative to its norm; 0 asks for bit-identical weights); its dead units are
counted at the last checkpoint, ``dead_since`` the first step from which they stayed dead.

How it runs: one Dask task per checkpoint reads it (once) and keeps its arrays in the cluster;
one task per pair, (previous, current) and (first, current), compares two of them with the
streamed float64 comparison of ``weightio diff`` (``weightio.analysis.streamcompare``). A task
holds one checkpoint (a read) or two (a pair); a checkpoint's arrays are dropped as soon as its
pairs are done, the first one's at the end. A checkpoint that cannot be read is reported with
its typed error and left out.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from weightio.batch.cluster import dask_client, local_workers
from weightio.batch.conversion import FileError, error_of
from weightio.batch.sources import basename, expand, step_from_name
from weightio.errors import InvalidInputError, MalformedFileError
from weightio.format import remote
from weightio.options import check_tolerance

TRACK_FORMAT = "weightio.track/1"


# -- what a read task keeps (on the worker) and tells the client --------------------------------


@dataclass
class LayerArrays:
    """One layer of one checkpoint: its tensors (in order) and what is known of it alone."""

    kind: str
    arrays: list[np.ndarray]
    norm: float
    units: int
    dead: list[int]


@dataclass
class Loaded:
    """One checkpoint as a read task leaves it in the cluster."""

    source: str
    step: int | None
    layers: dict[str, LayerArrays] = field(default_factory=dict)
    error: FileError | None = None


def _norm(arrays: list[np.ndarray]) -> float:
    total = 0.0
    for array in arrays:
        flat = np.asarray(array, dtype=np.float64).reshape(-1)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def _dead_units(arrays: list[np.ndarray], atol: float) -> tuple[int, list[int]]:
    """The layer's units (first axis of its first tensor of rank >= 2) and those all zero."""
    weights = [a for a in arrays if a.ndim >= 2]
    if not weights:
        return 0, []
    units = int(weights[0].shape[0])
    alive = np.zeros(units, dtype=bool)
    for array in arrays:
        if array.ndim >= 1 and array.shape[0] == units:
            rows = np.abs(np.asarray(array, dtype=np.float64).reshape(units, -1))
            alive |= (rows > atol).any(axis=1)
    return units, [int(i) for i in np.flatnonzero(~alive)]


def _step_entry(source: str, path: Any, key: str) -> tuple[int, Any]:
    """The step stored under ``key`` in a checkpoint, and what was read to find it."""
    name = basename(source).lower()
    if name.endswith((".pt", ".pth", ".bin")):
        from weightio.frameworks.torch.files.pickle import load_checkpoint

        obj = load_checkpoint(path)
        value = obj.get(key) if isinstance(obj, dict) else None
    elif name.endswith(".safetensors"):
        from weightio.format.paths import open_regular
        from weightio.format.safetensors import read_header

        with open_regular(path) as handle:
            value = read_header(handle, path).metadata.get(key)
        obj = None
    else:
        raise InvalidInputError(
            "step_from (--step-from) reads an entry of a .pt/.pth/.bin checkpoint or a "
            f"safetensors metadata key; take the step of {basename(source)!r} from its name instead",
            file=source,
        )
    if isinstance(value, (np.ndarray, np.generic)) and np.asarray(value).size == 1:
        value = np.asarray(value).item()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedFileError(f"holds no whole-number step under {key!r} (found {type(value).__name__})",
                                 file=source)
    return value, obj


def _arrays_of(source: str, path: Any, obj: Any, options: dict[str, Any]) -> Any:
    """The checkpoint's archive: from what finding its step already read, or read now."""
    if obj is not None:  # a .pt already unpickled for its step: read nothing twice
        from weightio.format.provenance import provenance
        from weightio.format.weights_only import archive_from_state_dict
        from weightio.frameworks.torch.files.checkpoints import pick_state_dict

        state_dict, entry = pick_state_dict(obj, path, options.get("key"),
                                            is_tensor=lambda v: isinstance(v, np.ndarray))
        return archive_from_state_dict(
            state_dict, name=PurePosixPath(basename(source)).stem,
            provenance=provenance("torch", framework_version=None, source_class=None, source_key=entry))
    from weightio.verbs.read import read

    return read(path, **options)


def load_task(source: str, step_from: str | None, options: dict[str, Any], dead_atol: float) -> Loaded:
    """Read one checkpoint (runs on a worker); its typed error instead if it cannot be read."""
    import shutil

    staging = None
    try:
        path: Any = remote.as_local(source)
        if remote.is_remote(path):
            staging = remote.staged(str(path))
            path = staging
        if step_from is not None:
            step, obj = _step_entry(source, path, step_from)
        else:
            step, obj = step_from_name(source), None
        archive = _arrays_of(source, path, obj, options)
        loaded = Loaded(source=source, step=step)
        grouped: dict[str, tuple[str, list[np.ndarray]]] = {}
        for layer, _, ref in archive.spec.tensor_refs():
            kind = getattr(layer, "kind", "layer")
            grouped.setdefault(layer.name, (kind, []))[1].append(np.array(archive.tensors[ref.key]))
        for name, (kind, arrays) in grouped.items():
            units, dead = _dead_units(arrays, dead_atol)
            loaded.layers[name] = LayerArrays(kind, arrays, _norm(arrays), units, dead)
        return loaded
    except Exception as exc:  # noqa: BLE001 - one unreadable checkpoint never stops the run
        return Loaded(source=source, step=None, error=error_of(exc))
    finally:
        if staging is not None:
            shutil.rmtree(staging.parent, ignore_errors=True)


@dataclass
class Info:
    """What the client learns of a read checkpoint: no arrays."""

    source: str
    step: int | None
    error: FileError | None
    layers: dict[str, tuple[str, int, float, int, list[int]]]  # kind, parameters, norm, units, dead


def info_task(loaded: Loaded) -> Info:
    """Runs where ``loaded`` is: its step, error and per-layer facts, without the arrays."""
    return Info(loaded.source, loaded.step, loaded.error, {
        name: (layer.kind, sum(int(a.size) for a in layer.arrays), layer.norm, layer.units, layer.dead)
        for name, layer in loaded.layers.items()
    })


def pair_task(a: Loaded, b: Loaded) -> dict[str, tuple[float, float, float] | None]:
    """‖B − A‖, ‖A‖, ‖B‖ per layer both hold with the same shapes (None where they differ)."""
    from weightio.analysis.streamcompare import compare_pairs

    out: dict[str, tuple[float, float, float] | None] = {}
    for name, la in a.layers.items():
        lb = b.layers.get(name)
        if lb is None or [x.shape for x in la.arrays] != [y.shape for y in lb.arrays]:
            out[name] = None
            continue
        figures = list(compare_pairs(list(zip(la.arrays, lb.arrays)), workers=1))
        diff = math.sqrt(sum((f.diff_l2 or 0.0) ** 2 for f in figures))
        out[name] = (diff, la.norm, lb.norm)
    return out


# -- the report ----------------------------------------------------------------------------------


class LayerStep(BaseModel):
    """One layer at one checkpoint."""

    step: int
    norm: float = Field(description="‖Wᵢ‖ (float64, all the layer's tensors).")
    from_first: float | None = Field(description="‖Wᵢ − W₀‖ / ‖W₀‖.")
    from_previous: float | None = Field(description="‖Wᵢ − Wᵢ₋₁‖ / ‖Wᵢ₋₁‖ (None at the first).")
    update_ratio: float | None = Field(description="‖Wᵢ − Wᵢ₋₁‖ / ‖Wᵢ‖ (None at the first).")
    dead_units: int


class TrackedLayer(BaseModel):
    """One layer over the run: the curve, and what it says."""

    name: str
    kind: str
    parameters: int
    units: int = Field(description="Rows of its weight (output units); 0 for a layer without one.")
    final_from_first: float | None
    mean_update_ratio: float | None
    last_update_ratio: float | None
    stopped_at: int | None = Field(description="Unchanged (within stopped_rtol) after this step.")
    dead_units: int = Field(description="Units whose weights are all zero at the last checkpoint.")
    dead_unit_indices: list[int]
    dead_since: int | None = Field(description="The first step from which those units stayed dead.")
    curve: list[LayerStep]


class Checkpoint(BaseModel):
    """A checkpoint of the run, by step (or its error)."""

    source: str
    step: int | None
    error: FileError | None = None


class TrackSummary(BaseModel):
    """Which layer moved most and least, which stopped, which have dead units."""

    most_moved: str | None
    least_moved: str | None
    stopped: list[str]
    with_dead_units: list[str]


class TrackReport(BaseModel):
    """The result of ``weightio.batch.track``; ``to_json()`` gives the stable JSON shape."""

    format: Literal["weightio.track/1"] = TRACK_FORMAT
    steps: list[int]
    checkpoints: list[Checkpoint]
    stopped_rtol: float
    dead_atol: float
    layers: list[TrackedLayer]
    summary: TrackSummary
    errors: list[Checkpoint]

    def layer(self, name: str) -> TrackedLayer:
        """The tracked layer named ``name``."""
        return next(layer for layer in self.layers if layer.name == name)

    def to_json(self, *, indent: int | None = 2) -> str:
        """The documented JSON shape (docs/scale.md)."""
        return self.model_dump_json(indent=indent)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None:
        return None
    if den > 0:
        return num / den
    return 0.0 if num == 0 else None


def _build_layer(name: str, infos: list[Info], first: list[Any], previous: list[Any],
                 stopped_rtol: float) -> TrackedLayer:
    kind, parameters, _, units, _ = infos[0].layers[name]
    curve = []
    for i, info in enumerate(infos):
        _, _, norm, _, dead = info.layers[name]
        f = (0.0, norm, norm) if i == 0 else first[i]
        p = None if i == 0 else previous[i]
        curve.append(LayerStep(
            step=info.step, norm=norm,  # type: ignore[arg-type]
            from_first=_ratio(f[0], f[1]) if f is not None else None,
            from_previous=_ratio(p[0], p[1]) if p is not None else None,
            update_ratio=_ratio(p[0], p[2]) if p is not None else None,
            dead_units=len(dead),
        ))
    updates = [c.update_ratio for c in curve[1:] if c.update_ratio is not None]
    stopped_at = None
    for i in range(len(curve) - 1, 0, -1):  # the trailing run of unchanged checkpoints
        change = previous[i]
        if change is None or change[0] > stopped_rtol * max(change[1], change[2]):
            break
        stopped_at = curve[i - 1].step
    final_dead = infos[-1].layers[name][4]
    dead_since = None
    if final_dead:
        for i in range(len(infos) - 1, -1, -1):
            if not set(final_dead) <= set(infos[i].layers[name][4]):
                break
            dead_since = infos[i].step
    return TrackedLayer(
        name=name, kind=kind, parameters=parameters, units=units,
        final_from_first=curve[-1].from_first, mean_update_ratio=sum(updates) / len(updates) if updates else None,
        last_update_ratio=curve[-1].update_ratio, stopped_at=stopped_at, dead_units=len(final_dead),
        dead_unit_indices=final_dead, dead_since=dead_since, curve=curve,
    )


def track(
    sources: Sequence[str | os.PathLike[str]],
    *,
    step_from: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    stopped_rtol: float = 1e-7,
    dead_atol: float = 0.0,
    **options: Any,
) -> TrackReport:
    """Follow every layer through a run's checkpoints (see the module docstring).

    Args:
        sources: Checkpoints: files, folders, globs or URLs (at least two readable ones).
        step_from: Take each step from this checkpoint entry instead of the file name.
        scheduler: A Dask scheduler's address; ``None`` starts a ``LocalCluster`` on 127.0.0.1.
        workers: Worker processes of the local cluster.
        stopped_rtol: A layer whose update is at most this fraction of its norm is unchanged.
        dead_atol: A weight at most this far from zero counts as zero for dead units.
        **options: Reader options for every checkpoint (``key=``, ``trust_pickle=`` …).

    Raises:
        InvalidInputError: fewer than two readable checkpoints, two of one step, or layers that
            differ between checkpoints.
    """
    stopped_rtol = check_tolerance("stopped_rtol", stopped_rtol)
    dead_atol = check_tolerance("dead_atol", dead_atol)
    if workers is not None:
        local_workers(workers, 1)
    files = expand(sources)
    if step_from is None:
        for source in files:
            step_from_name(source)  # a name without a step fails now, before any cluster
    token = secrets.token_hex(4)
    with dask_client(scheduler, workers=workers, jobs=len(files)) as client:
        loads = [client.submit(load_task, source, step_from, options, dead_atol, pure=False,
                               key=f"weightio-read-{i:05d}-{token}") for i, source in enumerate(files)]
        infos: list[Info] = client.gather([client.submit(info_task, f, key=f"weightio-info-{i:05d}-{token}")
                                           for i, f in enumerate(loads)])
        good = sorted((i for i, info in enumerate(infos) if info.error is None), key=lambda i: infos[i].step)
        errors = [Checkpoint(source=info.source, step=info.step, error=info.error)
                  for info in infos if info.error is not None]
        steps = [infos[i].step for i in good]
        repeated = sorted({s for s in steps if steps.count(s) > 1})
        if repeated:
            raise InvalidInputError(f"several checkpoints have step {repeated[0]}; give one per step")
        if len(good) < 2:
            raise InvalidInputError(
                f"tracking needs two readable checkpoints, found {len(good)}"
                + (f" ({errors[0].source}: {errors[0].error.message})" if errors else ""))
        names = list(infos[good[0]].layers)
        for i in good[1:]:
            if list(infos[i].layers) != names:
                raise InvalidInputError(
                    f"{infos[i].source} holds other layers than {infos[good[0]].source}; a run's "
                    "checkpoints must share their layers")
        ordered = [loads[i] for i in good]
        previous = [None] + [client.submit(pair_task, ordered[k - 1], ordered[k], priority=-k,
                                           key=f"weightio-pair-prev-{k:05d}-{token}")
                             for k in range(1, len(ordered))]
        first = [None, previous[1]] + [client.submit(pair_task, ordered[0], ordered[k], priority=-k,
                                                     key=f"weightio-pair-first-{k:05d}-{token}")
                                       for k in range(2, len(ordered))]
        del loads, ordered  # each checkpoint's arrays go once its pairs are done
        previous_figures = [None, *client.gather(previous[1:])]
        first_figures = [None, previous_figures[1], *client.gather(first[2:])]
    tracked_infos = [infos[i] for i in good]
    layers = []
    for name in names:
        prev = [None] + [figures[name] for figures in previous_figures[1:]]
        firsts = [None] + [figures[name] for figures in first_figures[1:]]
        layers.append(_build_layer(name, tracked_infos, firsts, prev, stopped_rtol))
    moved = [layer for layer in layers if layer.final_from_first is not None]
    summary = TrackSummary(
        most_moved=max(moved, key=lambda layer: layer.final_from_first).name if moved else None,
        least_moved=min(moved, key=lambda layer: layer.final_from_first).name if moved else None,
        stopped=[layer.name for layer in layers if layer.stopped_at is not None],
        with_dead_units=[layer.name for layer in layers if layer.dead_units],
    )
    return TrackReport(
        steps=steps, stopped_rtol=stopped_rtol, dead_atol=dead_atol, layers=layers, summary=summary,
        checkpoints=[Checkpoint(source=infos[i].source, step=infos[i].step) for i in good],
        errors=errors,
    )
