"""``weightio.inspect``: what ``weightio inspect`` shows, optionally in the source's own terms."""

from __future__ import annotations

from typing import Any

from weightio.analysis.inspect import Inspection, inspect_archive
from weightio.errors import UnsupportedSourceError
from weightio.format.archive import Archive

#: The frameworks whose names ``native=True`` can show.
NATIVE_FRAMEWORKS = ("keras", "torch")


def native_names(archive: Archive) -> tuple[str, dict[str, list[Any]] | None]:
    """Whose names the archive's tensors take natively, and the tensors where they differ.

    PyTorch's names and shapes are weightio's canonical ones (state-dict keys, ``[out, in]``),
    so a PyTorch source only gets back the batch-norm counters weightio does not keep
    (``frameworks/torch/native.py``); a bare state dict needs nothing (``None``): its names are
    its file's own (``file``, or ``torch`` from PyTorch). A Keras source's
    come from the Keras mapping (``frameworks/keras/native.py``), without Keras or any tensor
    read.

    Raises:
        UnsupportedSourceError: a source from neither Keras nor PyTorch.
    """
    framework = archive.spec.provenance.source_framework
    if archive.spec.weights_only:
        return ("torch" if framework == "torch" else "file"), None
    if framework == "torch":
        from weightio.frameworks.torch.native import torch_native_tensors

        return "torch", torch_native_tensors(archive)
    if framework == "keras":
        from weightio.frameworks.keras.native import keras_native_tensors

        return "keras", keras_native_tensors(archive)
    raise UnsupportedSourceError(
        f"native names are Keras' or PyTorch's; this archive's source is {framework}, whose "
        "tensors weightio names canonically (inspect it without native names)",
        file=archive.path,
    )


def inspect(
    source: Any, *, native: bool = False, stats: bool = False, progress: bool = False,
    **options: Any,
) -> Inspection:
    """Describe a model or checkpoint: per layer its kind, parameters, shapes, dtypes, counts.

    Args:
        source: An ``Archive`` or anything ``weightio.read`` reads (``**options`` go to it).
        native: Parameters in the source framework's names and shapes: Keras ``kernel [in,
            out]``, ``recurrent_kernel``, one LSTM ``bias`` (weightio's canonical form has
            PyTorch's two), ``gamma``/``moving_mean``, each at its ``layer.weights`` path, and
            counts as Keras' ``count_params()`` gives them; PyTorch's are its state-dict keys
            and shapes, which are the canonical ones. ``Inspection.names`` says which.
        stats: Read every tensor for statistics (canonical tensors; not with ``native``).
        progress: A progress bar on stderr for statistics over a few hundred MB.

    Raises:
        InvalidInputError: ``native`` with ``stats``.
        UnsupportedSourceError: ``native`` for a source from neither Keras nor PyTorch.
    """
    archive = source if isinstance(source, Archive) else _read(source, options)
    if not native:
        return inspect_archive(archive, stats=stats, progress=progress)
    if stats:  # refused before any mapping work
        return inspect_archive(archive, stats=True, native={})
    names, tensors = native_names(archive)
    return inspect_archive(archive, progress=progress, native=tensors or {}, names=names)


def _read(source: Any, options: dict[str, Any]) -> Archive:
    from weightio.verbs.read import read

    return read(source, **options)
