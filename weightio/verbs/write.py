"""Turning an archive back into native models, and checking an archive's integrity."""

from __future__ import annotations

import os
from typing import Any

from weightio.errors import UnsupportedSourceError
from weightio.format.archive import Archive, plain
from weightio.format.store import load
from weightio.frameworks.pairing import LoadReport


def to_keras(archive: Archive, *, nested: bool | None = None) -> Any:
    """Build a runnable ``keras.Model`` holding the archive's weights.

    Layers named ``outer/inner`` (a nested model read inlined) are rebuilt as a nested
    Functional model ``outer`` (``nested=None``: when the group is a clean sub-graph, else flat
    with a warning; ``True``: required; ``False``: always flat).

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture (a bare state dict).
        UnsupportedLayerError: a layer with no exact Keras equivalent, named.
    """
    from weightio.frameworks.keras.write.build import to_keras

    return to_keras(plain(archive), nested=nested)  # encoded (quantised) parameters decoded, docs/format.md


def to_torch(archive: Archive, *, keep_int8: bool = False) -> Any:
    """Build a runnable ``torch.nn.Module`` (``nn.Sequential`` for a chain, else an fx GraphModule).

    Quantised (encoded) weights are dequantised into plain float parameters, unless
    ``keep_int8=True``: then each dense/conv layer whose weight is int8 (or uint8) encoded
    becomes a ``QuantizedLinear``/``QuantizedConv`` holding the integers, scale and zero point
    as buffers and decoding them in ``forward`` by the rule of docs/format.md (the same
    outputs, a ~4x smaller state dict). Other encoded layers (float8, separable or transposed
    convolutions) are dequantised and named in a ``UserWarning``.

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture (a bare state dict).
        UnsupportedLayerError: a layer with no exact PyTorch equivalent, named.
    """
    from weightio.frameworks.torch.write.build import to_torch as build

    return build(archive, keep_int8=keep_int8)  # dequantises (``plain``) unless keep_int8


def to_sklearn(archive: Archive, *, classes: Any = None) -> Any:
    """Build a fitted scikit-learn estimator (or Pipeline) computing what the archive describes.

    Leading affine layers become scalers; one dense layer a linear model; a dense stack with one
    shared hidden activation (relu, tanh, logistic, identity) an MLPRegressor/MLPClassifier.
    ``classes=`` gives class labels to an archive that has none (making it a classifier).

    Raises:
        UnsupportedLayerError: a layer scikit-learn cannot express (mixed hidden activations,
            convolutions, …), named.
    """
    from weightio.frameworks.sklearn import write as sklearn_write

    return sklearn_write.to_sklearn(plain(archive), classes=classes)


def load_into(
    archive: Any, model: Any, *, strict: bool = True, rename: Any = None
) -> LoadReport:
    """Copy the archive's weights into an existing model; report what was loaded.

    Layers are matched by order and kind and every shape and dtype is checked; all mismatches
    are reported at once, by layer name, in a ``StructureMismatchError``. Weights cross
    frameworks: a Keras model's into a ``torch.nn.Module`` and back, conv kernels transposed
    and a flatten's order folded into the dense layer after it.

    Args:
        archive: The weights: an ``Archive``, or anything ``weightio.read`` reads (a live
            model, a state dict, a file), read first. A weights-only archive (a bare state
            dict) pairs with a torch model by state-dict key, and with a Keras model by
            canonical position (the n-th tensor into the n-th, in PyTorch's layout).
        model: A ``torch.nn.Module`` or ``keras.Model``, changed in place.
        strict: ``False`` copies what fits and skips the rest instead of refusing (a backbone
            into a model with a new head); the report names what was skipped and why, and what
            of the model kept its own values.
        rename: (PyTorch) pair by state-dict key with the archive's keys renamed: a mapping of
            prefixes (``{"backbone.": ""}``) or a function of the key (``None`` drops it).

    Returns:
        A ``LoadReport``: ``.model``, ``.loaded``, ``.skipped``, ``.missing``, ``.summary()``.
    """
    from weightio.frameworks.table import object_source  # here: `verify` needs no reader

    row = object_source(model)
    if row is None or row.load_into is None:
        raise UnsupportedSourceError(
            f"load_into needs a torch.nn.Module or keras.Model, got {type(model).__qualname__}"
        )
    if not isinstance(archive, Archive):
        from weightio.verbs.read import read

        archive = read(archive)
    options = {"strict": strict} if rename is None else {"strict": strict, "rename": rename}
    return row.load_into(plain(archive), model, **options)


#: Magic bytes of the model files verify is sometimes handed: zip, pickle protocol 2+, HDF5.
_OTHER_FORMATS = (b"PK\x03\x04", b"\x80", b"\x89HDF")


def _refuse_other_formats(path: os.PathLike[str] | str) -> None:
    """A local file recognisably of another format (a zip such as ``.pt2``/``.pt``/``.keras``,
    a legacy pickle, HDF5) gets a refusal that says what verify checks, instead of the
    safetensors reader's "header claims ... bytes". A damaged archive still gets that reader's
    own ``MalformedFileError``.
    """
    from pathlib import Path

    if "://" in str(path):
        return
    local = Path(path)
    if not local.is_file() or local.name.endswith(".json"):
        return  # a folder, a shard index or a missing file: load's own message says which
    with open(local, "rb") as handle:
        head = handle.read(9)
    # a safetensors header length may start with 0x80 too: its JSON brace at byte 8 decides
    if head.startswith(_OTHER_FORMATS) and head[8:9] != b"{":
        raise UnsupportedSourceError(
            f"{local.name} is not a weightio archive (.safetensors): verify checks the digests "
            f"an archive records; `weightio convert {local.name} out.safetensors` makes one, "
            "with a proof",
            file=local,
        )


def verify(path: os.PathLike[str] | str, *, progress: bool = False) -> Archive:
    """Load an archive and check every tensor against its recorded digest (BLAKE3 or sha256).

    Raises:
        IntegrityError: naming every tensor whose bytes changed.
        UnsupportedSourceError: ``path`` is a local file of another format (a ``.pt2``, a
            checkpoint): only an archive records digests to check.
    """
    _refuse_other_formats(path)
    archive = load(path)
    archive.verify(progress=progress)
    return archive
