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

from weightio.format import remote
from weightio.format.archive import Archive
from weightio.frameworks.table import Source, open_object, open_path


def open_source(source: Any, **options: Any) -> Source:
    """Read ``source`` and keep a runner for it; see ``read`` for what is accepted."""
    if remote.is_remote(source):
        return _open_remote(str(source), options)
    if isinstance(source, (str, os.PathLike)):
        return open_path(Path(remote.as_local(source)), **options)
    return open_object(source, **options)


def _open_remote(url: str, options: dict[str, Any]) -> Source:
    """A URL of object storage: an archive by ranged reads, anything else from a staged copy
    (kept until the archive read from it is collected).
    """
    from weightio.format.single import open_archive_file

    if not options:
        archive = open_archive_file(url)
        if archive is not None:
            return Source(archive, "weightio")
    local = remote.staged(url)
    try:
        source = open_path(local, **options)
    except BaseException:
        import shutil

        shutil.rmtree(local.parent, ignore_errors=True)
        raise
    remote.remove_with(source.archive, local.parent)
    return source


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

    Paths may be fsspec URLs (``s3://…``, ``file://…``; ``weightio.format.remote``): an archive
    opens header first by ranged reads, any other file is copied to a private local folder.

    Files are read without any framework: Keras files with h5py, zipfile and json; PyTorch
    checkpoints with a data-only unpickler. Tensors stay memory-mapped until used.

    Returns:
        The archive. Bare state dicts give a weights-only archive (``spec.weights_only``).
    """
    return open_source(source, **options).archive
