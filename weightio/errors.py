"""One exception hierarchy for everything weightio refuses.

Every error says *where* (file, layer, tensor), *what* went wrong and *what to do*. Each class
also subclasses the builtin a caller would naturally catch (``ValueError``, ``FileNotFoundError``,
``ImportError`` …), so code written against the builtins keeps working. The CLI maps
``exit_code`` to the process exit status: 1 for a failed check, 2 for bad usage or bad input.
"""

from __future__ import annotations

__all__ = [
    "WeightioError",
    "SourceNotFoundError",
    "UnsupportedSourceError",
    "MalformedFileError",
    "ResourceLimitError",
    "ExternalReferenceError",
    "UnsafeFormatError",
    "UnsupportedDtypeError",
    "UnsupportedTensorError",
    "SpecValidationError",
    "UnsupportedLayerError",
    "TraceError",
    "WeightsOnlyArchiveError",
    "StructureMismatchError",
    "MissingFrameworkError",
    "IntegrityError",
    "VerificationError",
    "WriteError",
    "InvalidInputError",
    "TargetExistsError",
    "StorageError",
    "ClusterError",
]


class WeightioError(Exception):
    """Base of every error weightio raises on purpose.

    Args:
        message: What went wrong and what to do about it.
        file: The file involved, if any.
        layer: The layer involved, if any.
        tensor: The tensor involved, if any.
    """

    exit_code: int = 2

    def __init__(
        self,
        message: str,
        *,
        file: object | None = None,
        layer: str | None = None,
        tensor: str | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.layer = layer
        self.tensor = tensor
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file '{self.file}'")
        if self.layer is not None:
            where.append(f"layer '{self.layer}'")
        if self.tensor is not None:
            where.append(f"tensor '{self.tensor}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def with_file(self, file: object) -> WeightioError:
        """This error naming ``file`` too (a new error of the same class), if it names none."""
        if self.file is not None:
            return self
        return type(self)(self.message, file=file, layer=self.layer, tensor=self.tensor)

    def __reduce__(self):  # keep errors picklable across processes (pytest-xdist, multiprocessing)
        return (_rebuild, (type(self), self.message, self.file, self.layer, self.tensor))


def _rebuild(cls, message, file, layer, tensor):  # type: ignore[no-untyped-def]
    return cls(message, file=file, layer=layer, tensor=tensor)


class SourceNotFoundError(WeightioError, FileNotFoundError):
    """The file or folder named as a source does not exist."""


class UnsupportedSourceError(WeightioError, TypeError):
    """weightio cannot tell what kind of model or file it was given."""


class MalformedFileError(WeightioError, ValueError):
    """A file's bytes do not follow its format (truncated, inconsistent header, bad JSON…)."""


class ResourceLimitError(WeightioError, ValueError):
    """A file declares sizes beyond what weightio will allocate or read."""


class ExternalReferenceError(WeightioError, ValueError):
    """A file points outside itself (links, external storage, paths that escape)."""


class UnsafeFormatError(WeightioError, ValueError):
    """Reading the file would execute code from it; weightio refuses."""


class UnsupportedDtypeError(WeightioError, TypeError):
    """A tensor dtype weightio does not store, or a cast that would change numbers."""


class UnsupportedTensorError(WeightioError, TypeError):
    """A tensor weightio cannot store bit-exact (quantized, sparse, meta, subclass)."""


class SpecValidationError(WeightioError, ValueError):
    """The layer spec is inconsistent with itself or with the stored tensors."""


class UnsupportedLayerError(WeightioError, NotImplementedError):
    """A layer or operation that has no exact mapping to the target."""


class TraceError(WeightioError, ValueError):
    """A PyTorch module could not be traced into a graph weightio can read."""


class WeightsOnlyArchiveError(WeightioError, ValueError):
    """The archive holds weights without an architecture, so no runnable model can be built."""


class StructureMismatchError(WeightioError, ValueError):
    """``load_into``: the archive and the target model do not have the same structure."""


class MissingFrameworkError(WeightioError, ImportError):
    """An optional framework is needed and not installed."""


class IntegrityError(WeightioError, ValueError):
    """Stored bytes do not match the checksums recorded when the archive was written."""

    exit_code = 1


class VerificationError(WeightioError, AssertionError):
    """A converted model does not compute the same numbers as its source."""

    exit_code = 1


class WriteError(WeightioError, OSError):
    """Writing an output failed; the target was left as it was."""


class TargetExistsError(WriteError, FileExistsError):
    """The target exists and the write was asked not to overwrite it (``overwrite=False``)."""


class StorageError(WeightioError, OSError):
    """Object storage (an fsspec URL: ``s3://``, ``gs://`` …) failed: unreachable, refused,
    denied, or it answered something unexpected. A missing object is ``SourceNotFoundError``.
    """


class ClusterError(WeightioError, ConnectionError):
    """The Dask cluster of a batch could not be reached or started, or its workers cannot run
    weightio (not installed, another version).
    """


class InvalidInputError(WeightioError, ValueError):
    """An input array given to ``run``/``explain`` does not fit the model's declared inputs, or
    an option's value is out of range (``samples=0``, a negative seed or tolerance).
    """


def received(value: object, limit: int = 160) -> str:
    """A bounded ``repr`` of a value read from a file, for a message.

    Built-in ``repr`` of what a file can make is unbounded: a pickle's memo lets 40 levels of one
    reused list stand for 2**40 elements (a 2**40-step repr), and a container can hold itself.
    ``reprlib`` stops at a few levels and items and marks recursion, so this is cheap for any
    value.
    """
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxlist, shortener.maxtuple, shortener.maxdict = 3, 6, 6, 4
    shortener.maxset = shortener.maxfrozenset = shortener.maxdeque = shortener.maxarray = 6
    shortener.maxstring = shortener.maxother = shortener.maxlong = 60
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
