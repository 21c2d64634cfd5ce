"""Turning an archive back into native models, and checking an archive's integrity."""

from __future__ import annotations

import os
from typing import Any

from weightio.archive import Archive, load
from weightio.errors import UnsupportedSourceError
from weightio.reading import _framework_of


def to_keras(archive: Archive) -> Any:
    """Build a runnable ``keras.Model`` holding the archive's weights.

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture (a bare state dict).
        UnsupportedLayerError: a layer with no exact Keras equivalent, named.
    """
    from weightio.adapters import keras as keras_adapter

    return keras_adapter.to_keras(archive)


def to_torch(archive: Archive) -> Any:
    """Build a runnable ``torch.nn.Module`` (``nn.Sequential`` for a chain, else an fx GraphModule).

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture (a bare state dict).
        UnsupportedLayerError: a layer with no exact PyTorch equivalent, named.
    """
    from weightio.adapters import torch as torch_adapter

    return torch_adapter.to_torch(archive)


def to_sklearn(archive: Archive, *, classes: Any = None) -> Any:
    """Build a fitted scikit-learn estimator (or Pipeline) computing what the archive describes.

    Leading affine layers become scalers; one dense layer a linear model; a dense stack with one
    shared hidden activation (relu, tanh, logistic, identity) an MLPRegressor/MLPClassifier.
    ``classes=`` gives class labels to an archive that has none (making it a classifier).

    Raises:
        UnsupportedLayerError: a layer scikit-learn cannot express (mixed hidden activations,
            convolutions, …), named.
    """
    from weightio.adapters import sklearn_write

    return sklearn_write.to_sklearn(archive, classes=classes)


def load_into(archive: Archive, model: Any) -> Any:
    """Copy the archive's weights into an existing model of the same structure; return it.

    Layers are matched by order and kind and every shape and dtype is checked; all mismatches
    are reported at once, by layer name, in a ``StructureMismatchError``.
    """
    framework = _framework_of(model)
    if framework == "torch":
        from weightio.adapters import torch as torch_adapter

        torch_adapter.load_into_torch(archive, model)
    elif framework == "keras":
        from weightio.adapters import keras as keras_adapter

        keras_adapter.load_into_keras(archive, model)
    else:
        raise UnsupportedSourceError(
            f"load_into needs a torch.nn.Module or keras.Model, got {type(model).__qualname__}"
        )
    return model


def verify(path: os.PathLike[str] | str) -> Archive:
    """Load an archive and check every tensor against its recorded sha256.

    Raises:
        IntegrityError: naming every tensor whose bytes changed.
    """
    archive = load(path)
    archive.verify()
    return archive
