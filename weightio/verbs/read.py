"""``weightio.read``: turn anything a user points at into an ``Archive``.

What a source is, and which framework package reads it, is looked up in the one table of
sources and targets (``weightio.frameworks.table``): live objects by their classes' modules (no
framework is imported to ask), files by suffix or first bytes. Alongside the archive,
``open_source`` keeps a way to run the source itself, so conversions can be verified against
the original and not just against weightio's own reading of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from weightio.format.archive import Archive
from weightio.frameworks.table import Source, open_object, open_path


def open_source(source: Any, **options: Any) -> Source:
    """Read ``source`` and keep a runner for it; see ``read`` for what is accepted."""
    if isinstance(source, (str, os.PathLike)):
        return open_path(Path(source), **options)
    return open_object(source, **options)


def read(source: Any, **options: Any) -> Archive:
    """Read a model or checkpoint into an ``Archive``.

    Args:
        source: A ``keras.Model``; a ``torch.nn.Module``; a fitted scikit-learn estimator or
            Pipeline; a state dict (names to tensors or arrays); a weightio ``Archive``; or a
            path to ``.keras``, ``.h5``, ``.pt``, ``.pth``, ``.bin``, ``.skops``,
            ``.safetensors`` (a weightio archive or a plain state dict), ``.weights.h5`` (with
            ``architecture=``), a sharded set (its ``*.safetensors.index.json`` or the folder
            holding it), or ``.pkl``/``.joblib`` (with ``trust_pickle=True``).
        **options: Passed to the adapter: ``example_input=`` for a module whose input shape
            cannot be inferred, ``key=`` to pick the state dict inside a training checkpoint,
            ``architecture=`` (a ``.keras`` file, ``config.json`` or config dict) for a
            ``.weights.h5`` file; for scikit-learn ``head=`` (``"predict_proba"`` default for
            classifiers that have it, ``"decision_function"``), ``dtype=`` (e.g.
            ``"float32"``), ``trust_pickle=True`` to unpickle a file you trust, ``trusted=[...]``
            extra types for a ``.skops`` file.

    Files are read without any framework: Keras files with h5py, zipfile and json; PyTorch
    checkpoints with a data-only unpickler. Tensors stay memory-mapped until used.

    Returns:
        The archive. Bare state dicts give a weights-only archive (``spec.weights_only``).
    """
    return open_source(source, **options).archive
