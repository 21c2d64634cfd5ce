"""PNG pictures of weights and of a diff, drawn with matplotlib's Agg renderer.

matplotlib is optional (``pip install 'weightio[plot]'``) and imported only here, when a picture
is asked for. Figures are built with ``matplotlib.figure.Figure`` directly, never through
``pyplot``: no global state, no GUI backend, no display needed, safe to call from any thread.
Every function returns PNG bytes; ``write_pngs`` writes them atomically. Tensor data is read chunk
by chunk (``weightio.analysis.stats``), so pictures of big tensors stay within bounded memory.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightio.analysis.stats import CHUNK_ELEMENTS, histogram, tensor_stats
from weightio.format.atomic import atomic_write
from weightio.terminal import printable
from weightio.transforms.importance import image_shape

if TYPE_CHECKING:  # pragma: no cover
    from weightio.analysis.diff import DiffReport
    from weightio.format.archive import Archive
    from weightio.transforms.importance import Importance

#: At most this many filters are drawn in a conv filter grid.
MAX_FILTERS = 64


def _figure(width: float, height: float) -> Any:
    from weightio.optional import require

    figure_module = require("matplotlib.figure", purpose="drawing plots")
    return figure_module.Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes, every text in it shown literally.

    Titles and labels hold names from the file: control and bidi characters are escaped, and
    ``$…$`` is not parsed as mathtext (a name like ``a$^{$`` would make matplotlib raise).
    """
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_text(printable(text.get_text()))
        text.set_parse_math(False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def safe_name(text: str) -> str:
    """A file-name-safe form of a layer or tensor name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "tensor"


def _param_layers(archive: Archive) -> list[Any]:
    return [layer for layer in archive.spec.layers if layer.tensor_refs()]


def layer_histogram(archive: Archive, layer: Any) -> bytes:
    """One histogram per tensor of ``layer`` (weights, biases, …), side by side."""
    refs = layer.tensor_refs()
    fig = _figure(3.2 * len(refs) + 0.6, 2.8)
    axes = fig.subplots(1, len(refs), squeeze=False)[0]
    for ax, (param, ref) in zip(axes, refs.items()):
        numel = math.prod(ref.shape)
        hist = histogram(archive.tensors[ref.key], bins=min(60, max(8, round(math.sqrt(numel)))))
        if hist is None:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        else:
            counts, edges = hist
            ax.stairs(counts, edges, fill=True, color="#4472c4")
        ax.set_title(f"{param} {list(ref.shape)}", fontsize=9)
        ax.set_xlabel("value", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("count", fontsize=8)
    fig.suptitle(f"{layer.name} ({layer.kind})", fontsize=10)
    return _png(fig)


def filter_grid(array: np.ndarray, title: str) -> bytes | None:
    """Conv filters as a grid of small images; ``None`` unless the tensor is 3-D or 4-D.

    Canonical conv weights are ``[out, in, *kernel]``. Each filter is scaled by its own largest
    ``|w|`` (so deep layers, whose filters differ in scale, do not come out washed-out grey) into
    ``[-1, 1]``, drawn on a diverging map with 0 white, beside one colour bar of that scale; the
    title says so. A 4-D filter with 3 input channels is shown in colour (RGB, as for a first
    layer on images: each filter min-max scaled); otherwise the input channels are averaged.
    3-D (1-D conv) filters show as rows of ``in × kernel``.
    """
    if array.ndim not in (3, 4) or array.shape[0] == 0:
        return None
    count = min(array.shape[0], MAX_FILTERS)
    filters = np.asarray(array[:count], dtype=np.float64)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    fig = _figure(1.1 * columns + 1.2, 1.1 * rows + 0.7)
    axes = fig.subplots(rows, columns, squeeze=False)
    shown_image = None
    colour = filters.ndim == 4 and filters.shape[1] == 3
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= count:
            continue
        f = np.nan_to_num(filters[i], nan=0.0, posinf=0.0, neginf=0.0)
        if colour:
            lo, hi = float(f.min()), float(f.max())
            ax.imshow(np.moveaxis((f - lo) / (hi - lo if hi > lo else 1.0), 0, -1),
                      interpolation="nearest")
            continue
        image = f.mean(axis=0) if f.ndim == 3 else f
        scale = float(np.max(np.abs(image))) or 1.0
        shown_image = ax.imshow(image / scale, cmap="coolwarm", vmin=-1.0, vmax=1.0,
                                interpolation="nearest")
    if shown_image is not None:
        fig.colorbar(shown_image, ax=axes.ravel().tolist(), shrink=0.8,
                     label="w / max|w| of its filter")
    shown = f" (first {count} of {array.shape[0]})" if count < array.shape[0] else ""
    how = "each filter min-max scaled (RGB)" if colour else "each filter scaled by its max |w|"
    fig.suptitle(f"{title} {list(array.shape)}{shown}; {how}", fontsize=9)
    return _png(fig)


#: The widest a bar chart gets (inches); more bars than fit are drawn thinner, never wider.
MAX_CHART_WIDTH = 16.0
#: A feature-importance bar chart shows at most this many features (the most important ones).
MAX_FEATURE_BARS = 48


def _bar_chart(
    labels: list[str], values: list[float], title: str, ylabel: str, *, log: bool = False
) -> bytes:
    fig = _figure(min(MAX_CHART_WIDTH, max(4.0, 0.35 * len(labels) + 1.5)), 3.4)
    ax = fig.subplots()
    positions = np.arange(len(labels))
    ax.bar(positions, values, color="#4472c4")
    ax.set_xticks(
        positions,
        labels,
        rotation=60 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
        fontsize=7,
    )
    if log and any(v > 0 for v in values):
        ax.set_yscale("log")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def layer_norms(archive: Archive) -> bytes | None:
    """Bar chart of each parameterised layer's L2 norm (all its tensors together)."""
    layers = _param_layers(archive)
    if not layers:
        return None
    norms = []
    for layer in layers:
        squares = sum(
            tensor_stats(archive.tensors[ref.key]).l2 ** 2 for ref in layer.tensor_refs().values()
        )
        norms.append(math.sqrt(squares))
    return _bar_chart([layer.name for layer in layers], norms, "L2 norm per layer", "L2 norm")


def input_importance(archive: Archive) -> tuple[list[float], str] | None:
    """Normalised absolute weights of the first dense/linear layer, per input feature.

    ``importance[j] = Σ_i |W[i, j]| / Σ_ij |W[i, j]|`` over the canonical ``[out, in]`` weight:
    for a linear model it ranks the features by the size of their coefficients (meaningful when
    inputs share a scale); for an MLP it shows which inputs the first layer listens to.
    """
    layers = _param_layers(archive)
    if not layers:
        return None
    first = layers[0]
    ref = first.tensor_refs().get("weight")
    if (
        first.kind not in ("dense", "opaque")
        or ref is None
        or len(ref.shape) != 2
        or ref.shape[1] == 0
    ):
        return None
    weight = archive.tensors[ref.key]
    sums = np.zeros(ref.shape[1], dtype=np.float64)
    step = max(1, CHUNK_ELEMENTS // ref.shape[1])
    for start in range(0, ref.shape[0], step):  # row blocks: bounded memory on big weights
        sums += np.nansum(
            np.abs(np.asarray(weight[start : start + step], dtype=np.float64)), axis=0
        )
    total = float(sums.sum())
    if total == 0:
        return None
    return [float(v) for v in sums / total], first.name


def feature_importance(archive: Archive) -> bytes | None:
    """Bar chart of ``input_importance``; ``None`` when the model does not start with a dense layer."""
    found = input_importance(archive)
    if found is None:
        return None
    values, layer = found
    image = image_shape(archive, len(values))
    if image is not None:
        return _importance_maps(np.asarray(values), image, layer)
    order = sorted(range(len(values)), key=lambda j: -values[j])[:MAX_FEATURE_BARS]
    shown = sorted(order) if len(order) == len(values) else order
    title = f"input-feature importance (|W| of {layer}, normalised)"
    if len(order) < len(values):
        title += f": the {len(order)} largest of {len(values)} features"
    return _bar_chart([str(j) for j in shown], [values[j] for j in shown], title, "share")


def _importance_maps(values: np.ndarray, image: tuple[int, int, int, str], layer: str,
                     gradients: bool = False) -> bytes:
    """Feature importance of an image input as one heat map per channel (28×28 for MNIST)."""
    channels, height, width, order = image
    if order == "channels_last":  # flattened (H, W, C): Keras's order
        maps = values.reshape(height, width, channels).transpose(2, 0, 1)
    else:
        maps = values.reshape(channels, height, width)
    shown = min(channels, 16)
    fig = _figure(min(MAX_CHART_WIDTH, 2.6 * shown + 1.2), 2.9)
    axes = fig.subplots(1, shown, squeeze=False)[0]
    top = float(maps.max()) or 1.0
    picture = None
    for c, ax in enumerate(axes):
        ax.set_axis_off()
        picture = ax.imshow(maps[c], cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
        if channels > 1:
            ax.set_title(f"channel {c}", fontsize=8)
    if picture is not None:
        fig.colorbar(picture, ax=list(axes), shrink=0.8,
                     label="share of mean |∂f/∂x|" if gradients else "share of Σ|W|")
    more = f" (first {shown} of {channels} channels)" if shown < channels else ""
    if gradients:
        title = f"input importance per pixel{more}:\nmean |∂f/∂x| over probes, f from {layer}"
    else:
        title = f"input-feature importance (|W| of {layer}, normalised) per pixel{more}"
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def importance_png(found: Importance) -> bytes:
    """The picture of ``weightio.importance``: a heat map per channel when a dense layer reads a
    flattened image, the kernel-position maps and shares per channel for a conv, else a bar chart
    of the largest shares.
    """
    values = np.asarray(found.scores)
    gradients = found.method == "gradients"
    if found.image is not None:
        return _importance_maps(values, found.image, printable(found.layer), gradients)
    if found.kind == "conv" and found.kernel_maps and np.asarray(found.kernel_maps[0]).ndim == 2:
        shown = min(len(found.kernel_maps), 16)
        fig = _figure(min(MAX_CHART_WIDTH, 2.2 * shown + 1.2), 2.8)
        axes = fig.subplots(1, shown, squeeze=False)[0]
        top = max(float(np.max(m)) for m in found.kernel_maps[:shown]) or 1.0
        picture = None
        for c, ax in enumerate(axes):
            ax.set_axis_off()
            picture = ax.imshow(found.kernel_maps[c], cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
            ax.set_title(f"channel {c}: {values[c]:.1%}", fontsize=8)
        if picture is not None:
            fig.colorbar(picture, ax=list(axes), shrink=0.8, label="share of Σ|W|")
        more = f" (first {shown} of {len(found.kernel_maps)})" if shown < len(found.kernel_maps) else ""
        fig.suptitle(f"input-channel importance (|W| of {printable(found.layer)}) per kernel position{more}",
                     fontsize=9)
        return _png(fig)
    ranked = found.ranked(MAX_FEATURE_BARS)
    title = (f"input importance (mean |∂f/∂x| over probes, f from {printable(found.layer)}, share)"
             if gradients else f"input importance (|W| of {printable(found.layer)}, share of Σ|W|)")
    if len(ranked) < len(values):
        title += f": the {len(ranked)} largest of {len(values)}"
    return _bar_chart([label for _, label, _ in ranked], [share for _, _, share in ranked], title, "share")


def diff_relative_change(report: DiffReport) -> bytes | None:
    """Bar chart of ‖B − A‖ / ‖A‖ per aligned layer (log scale when it spans decades)."""
    layers = [layer for layer in report.layers if layer.relative_l2 is not None]
    if not layers:
        return None
    values = [layer.relative_l2 or 0.0 for layer in layers]
    positive = [v for v in values if v > 0]
    spans = bool(positive) and max(positive) / min(positive) > 100
    return _bar_chart(
        [layer.name for layer in layers],
        values,
        "relative change per layer",
        "||B - A|| / ||A||",
        log=spans,
    )


def archive_pngs(
    archive: Archive, *, max_layers: int = 200, progress: bool = False
) -> list[tuple[str, bytes]]:
    """Every picture of one model, as ``(file name, PNG bytes)``.

    ``progress``: a bar on stderr while the tensors are read (norms, then histograms and filters:
    two passes), for models over a few hundred MB; a 1 GB checkpoint takes tens of seconds.
    """
    from weightio.progress import byte_progress
    from weightio.spec.dtypes import itemsize

    pngs: list[tuple[str, bytes]] = []
    layers = _param_layers(archive)
    drawn = layers[:max_layers]

    def size(group: list[Any]) -> int:
        return sum(math.prod(ref.shape) * itemsize(ref.dtype)
                   for layer in group for ref in layer.tensor_refs().values())

    with byte_progress("plot", size(layers) + size(drawn), enabled=progress) as advance:
        norms = layer_norms(archive)
        advance(size(layers))
        if norms is not None:
            pngs.append(("norms.png", norms))
        importance = feature_importance(archive)
        if importance is not None:
            pngs.append(("feature-importance.png", importance))
        for index, layer in enumerate(drawn):
            pngs.append(
                (f"hist-{index:03d}-{safe_name(layer.name)}.png", layer_histogram(archive, layer))
            )
            for param, ref in layer.tensor_refs().items():
                grid = filter_grid(archive.tensors[ref.key], f"{layer.name}.{param}")
                if grid is not None:
                    pngs.append(
                        (f"filters-{index:03d}-{safe_name(layer.name)}-{safe_name(param)}.png", grid)
                    )
            advance(size([layer]))
    return pngs


def write_pngs(pngs: Iterable[tuple[str, bytes]], out_dir: Path) -> list[Path]:
    """Write each PNG atomically into ``out_dir`` (created if needed); return the paths."""
    from weightio.errors import WriteError

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(
            f"cannot create the output folder ({exc.strerror})", file=out_dir
        ) from None
    written = []
    for name, data in pngs:
        target = out_dir / name
        with atomic_write(target) as handle:
            handle.write(data)
        written.append(target)
    return written
