"""What a PyTorch checkpoint's pickle may build: tensor rebuild functions with torch's own
signatures, storage types, dtypes, the few other globals ``torch.load(weights_only=True)``
allows, each answered by a function of weightio's own, and the persistent ids of storages.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from weightio.errors import (
    MalformedFileError,
    ResourceLimitError,
    UnsafeFormatError,
    UnsupportedTensorError,
    WeightioError,
    received,
)
from weightio.format.limits import check_shape, check_view
from weightio.frameworks.torch.files.opcodes import PickleError, run_pickle
from weightio.spec.dtypes import numpy_dtype

#: Largest pickle (the structure, not the tensor data) weightio reads.
MAX_PICKLE_BYTES = 256 * 1024 * 1024

_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "half": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "double": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "short": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "long": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype("<c8"),
}

#: The torch dtypes numpy has only through ``ml_dtypes`` (0.6 s to import): resolved on first use.
_ML_DTYPES = {
    "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e8m0fnu": "F8_E8M0",
}


def _torch_dtype(name: str) -> np.dtype:
    return _DTYPES[name] if name in _DTYPES else numpy_dtype(_ML_DTYPES[name])


#: Legacy typed storage classes (``torch.FloatStorage``…) -> element dtype.
_STORAGES: dict[str, np.dtype] = {
    "FloatStorage": _DTYPES["float32"],
    "DoubleStorage": _DTYPES["float64"],
    "HalfStorage": _DTYPES["float16"],
    "LongStorage": _DTYPES["int64"],
    "IntStorage": _DTYPES["int32"],
    "ShortStorage": _DTYPES["int16"],
    "CharStorage": _DTYPES["int8"],
    "ByteStorage": _DTYPES["uint8"],
    "BoolStorage": _DTYPES["bool"],
    "ComplexFloatStorage": _DTYPES["complex64"],
}

#: Globals that mean "a tensor weightio cannot store bit-exact", for a clearer refusal.
_UNSTORABLE = {
    "_rebuild_qtensor": "a quantized tensor",
    "_rebuild_sparse_tensor": "a sparse tensor",
    "_rebuild_sparse_csr_tensor": "a sparse tensor",
    "_rebuild_meta_tensor_no_storage": "a meta tensor (no values)",
    "_rebuild_wrapper_subclass": "a tensor subclass",
    "_rebuild_from_type_v2": "a tensor subclass",
    "_rebuild_nested_tensor": "a nested tensor",
    "_rebuild_device_tensor_from_numpy": "a device tensor",
}

_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
#: Device tags a storage may carry (``torch.load`` restores only registered device types).
_LOCATION = re.compile(r"(cpu|cuda|mps|xpu|hpu|xla|mtia|privateuseone)(:[0-9]{1,4})?")


class Frozen:
    """Objects this reader hands out; pickle's ``BUILD`` never reaches them (see ``_build``)."""

    __slots__ = ()


class _StorageType(Frozen):
    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name, self.dtype = name, dtype


class _DType(Frozen):
    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name, self.dtype = name, dtype


class Storage(Frozen):
    """One storage: its element dtype and count; ``array`` is attached once its bytes are known."""

    __slots__ = ("array", "dtype", "key", "numel")

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array: np.ndarray | None = None


class Storages:
    """The storages a pickle declares, by key: the zip and the legacy reader share this registry.

    A key declared a second time must repeat its dtype and element count: ``torch.load`` keeps the
    first declaration and reinterprets the rest, so a file that declares one storage two ways has
    no single meaning and is refused.
    """

    def __init__(self, file: Path, attach: Callable[[Storage], None] | None = None) -> None:
        self.file = file
        self.attach = attach
        self.by_key: dict[str, Storage] = {}

    def declare(self, key: str, dtype: np.dtype, numel: int) -> Storage:
        """The storage ``key``, declared once; a second declaration must agree on dtype and size."""
        found = self.by_key.get(key)
        if found is not None:
            if found.dtype.newbyteorder("=") != dtype.newbyteorder("=") or found.numel != numel:
                raise MalformedFileError(
                    f"storage {key!r} is declared twice, as {found.numel} x {found.dtype} and as "
                    f"{numel} x {dtype}; torch.load would silently reinterpret the second, so the "
                    "file has no single reading",
                    file=self.file,
                )
            return found
        storage = Storage(key, dtype, numel)
        if self.attach is not None:
            self.attach(storage)
        self.by_key[key] = storage
        return storage


def _tensor_flags(metadata: Any) -> tuple[str, ...]:
    """``_rebuild_tensor_v2``'s ``metadata``: the flags named (torch applies ``neg``/``conj``).

    ``torch._C._set_tensor_metadata`` sets a flag when its key is present, whatever the value
    (``{"neg": False}`` reads negated), so every key counts.
    """
    if metadata is None:
        return ()
    if type(metadata) not in (dict, OrderedDict) or not all(isinstance(k, str) for k in metadata):
        raise MalformedFileError(f"tensor metadata is not a dict of flags. Received: {received(metadata)}")
    return tuple(sorted(metadata))


class Pending(Frozen):
    """A tensor as the pickle describes it, turned into an array view by ``materialize``."""

    __slots__ = ("dtype", "flags", "offset", "shape", "storage", "strides")

    def __init__(self, storage: Storage, offset: int, shape: tuple[int, ...],
                 strides: tuple[int, ...], dtype: np.dtype, flags: tuple[str, ...] = ()) -> None:
        self.storage, self.offset, self.shape, self.strides, self.dtype = (
            storage, offset, shape, strides, dtype,
        )
        self.flags = flags

    def materialize(self, file: Path, key: str | None = None) -> np.ndarray:
        """The array view; ``key`` (the state-dict key holding it) names refusals."""
        try:
            return self._view(file)
        except WeightioError as exc:
            if exc.tensor is None and key is not None:
                raise type(exc)(exc.message, file=file, layer=exc.layer, tensor=key) from None
            raise

    def _view(self, file: Path) -> np.ndarray:
        if self.flags:
            raise UnsupportedTensorError(
                f"is saved as a view with flags {list(self.flags)}: torch.load applies them (a "
                "negated or conjugated view reads as other numbers than its storage holds), and "
                "weightio keeps stored bits only. Re-save it with t.resolve_neg().resolve_conj()",
                file=file,
            )
        storage = self.storage
        base = storage.array
        if base is None:
            raise MalformedFileError(f"storage {storage.key!r} has no data", file=file)
        if self.dtype != storage.dtype:  # an untyped (byte) storage viewed as ``dtype``
            if len(base) % self.dtype.itemsize:
                raise MalformedFileError(
                    f"storage {storage.key!r} of {len(base)} bytes does not hold whole "
                    f"{self.dtype} elements",
                    file=file,
                )
            base = base.view(self.dtype)
        count = len(base)
        check_shape(self.shape, base.itemsize, file=file, tensor=storage.key)
        if any(n == 0 for n in self.shape):
            if self.offset > count:
                raise MalformedFileError("tensor offset lies past its storage", file=file)
            return np.empty(self.shape, dtype=base.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides))
        if last >= count:
            raise MalformedFileError(
                f"tensor of shape {list(self.shape)}, strides {list(self.strides)} at offset "
                f"{self.offset} reaches element {last} of a {count}-element storage",
                file=file,
            )
        item = base.itemsize
        check_view(self.shape, self.strides, item, count * item, file=file, tensor=storage.key)
        contiguous = all(
            s == math.prod(self.shape[i + 1 :])
            for i, s in enumerate(self.strides)
            if self.shape[i] != 1
        )
        if contiguous:
            size = math.prod(self.shape)
            return base[self.offset : self.offset + size].reshape(self.shape)
        return np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.shape,
            strides=tuple(s * item for s in self.strides),
            writeable=False,
        )


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        type(v) is int and v >= 0 for v in value
    ):
        raise MalformedFileError(f"tensor {what} must be non-negative integers. Received: {received(value)}")
    return tuple(value)


def _hooks_empty(hooks: Any) -> None:
    if type(hooks) not in (dict, OrderedDict):
        raise MalformedFileError(
            f"a tensor's backward hooks are a {type(hooks).__name__}, not the empty OrderedDict "
            "torch.save writes"
        )
    if hooks:
        raise UnsafeFormatError("the tensor carries backward hooks (code); weightio refuses them")


def _requires_grad(value: Any, dtype: np.dtype) -> None:
    """Torch sets ``requires_grad``: it must be a bool, and True only for floating dtypes."""
    if type(value) is not bool:
        raise MalformedFileError(f"a tensor's requires_grad is {received(value)}, not a bool")
    if value and dtype.kind not in "fcV" and dtype.name not in _FLOAT_NAMES:
        raise MalformedFileError(
            f"a {dtype} tensor is marked requires_grad, which torch.load refuses (only floating "
            "tensors can require gradients)"
        )


_FLOAT_NAMES = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                "float8_e8m0fnu"}


def _rebuild_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                hooks: Any, metadata: Any = None) -> Pending:
    """``torch._utils._rebuild_tensor_v2``, with its signature (hooks are not optional)."""
    if not isinstance(storage, Storage) or type(offset) is not int or offset < 0:
        raise MalformedFileError("a tensor is rebuilt from something that is not a storage")
    shape, strides = _ints(size, "sizes"), _ints(stride, "strides")
    if len(shape) != len(strides):
        raise MalformedFileError(f"tensor has {len(shape)} sizes but {len(strides)} strides")
    _requires_grad(requires_grad, storage.dtype)
    _hooks_empty(hooks)
    return Pending(storage, offset, shape, strides, storage.dtype, _tensor_flags(metadata))


def _rebuild_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                hooks: Any, dtype: Any, metadata: Any = None) -> Pending:
    """``torch._utils._rebuild_tensor_v3``: an untyped storage viewed as ``dtype``."""
    if not isinstance(dtype, _DType):
        raise MalformedFileError(f"tensor dtype is not a torch dtype. Received: {received(dtype)}")
    pending = _rebuild_v2(storage, offset, size, stride, False, hooks, metadata)
    _requires_grad(requires_grad, dtype.dtype)
    pending.dtype = dtype.dtype
    return pending


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> Any:
    """``torch._utils._rebuild_parameter``."""
    if not isinstance(data, Pending):
        raise MalformedFileError("a parameter wraps something that is not a tensor")
    _requires_grad(requires_grad, data.dtype)
    _hooks_empty(hooks)
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, hooks: Any, state: Any) -> Any:
    """``torch._utils._rebuild_parameter_with_state``: only without extra state."""
    if state:
        raise UnsafeFormatError("the parameter carries extra Python state; weightio refuses it")
    return _rebuild_parameter(data, requires_grad, hooks)


_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("collections", "OrderedDict"): OrderedDict,
}
_CALLABLE_IDS = {id(fn) for fn in _FUNCTIONS.values()}


def _resolve_global(module: str, name: str) -> Any:
    """``GLOBAL module name``: the allowlist, answered with objects of this module's own."""
    fn = _FUNCTIONS.get((module, name))
    if fn is not None:
        return fn
    if module == "torch" and name in _STORAGES:
        return _StorageType(name, _STORAGES[name])
    if module == "torch" and name == "BFloat16Storage":
        return _StorageType(name, _torch_dtype("bfloat16"))
    if (module, name) in (("torch.storage", "UntypedStorage"), ("torch", "UntypedStorage")):
        return _StorageType(name, np.dtype("u1"))
    if module == "torch" and (name in _DTYPES or name in _ML_DTYPES):
        return _DType(name, _torch_dtype(name))
    what = _UNSTORABLE.get(name) if module.startswith("torch") else None
    if what is not None:
        raise UnsupportedTensorError(
            f"holds {what} ({module}.{name}); weightio stores plain dense tensors only. "
            "Convert it to a dense float tensor before saving"
        )
    raise UnsafeFormatError(
        f"the pickle names the global {module}.{name}, which is not a tensor or plain "
        "container; unpickling it could run code, so weightio refuses it. Re-save the weights "
        "from trusted code with torch.save(model.state_dict(), path), or, for a file you trust "
        "(a whole-module torch.save(model)), pass trust_pickle=True (CLI: --trust-pickle)"
    )


def _callable(obj: Any) -> bool:
    return id(obj) in _CALLABLE_IDS


def _plain_metadata(value: Any, depth: int = 0) -> bool:
    """What ``nn.Module.state_dict()`` stores in ``_metadata``: dicts of names to plain values."""
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) in (dict, OrderedDict) and depth < 3:
        return all(isinstance(k, str) and _plain_metadata(v, depth + 1) for k, v in value.items())
    return False


def _build(inst: Any, state: Any) -> None:
    """``BUILD``: torch's weights-only loader builds tensors, parameters and ``OrderedDict``s.

    weightio's rebuilt tensors take no state, and a state dict may carry only the ``_metadata``
    attribute ``nn.Module.state_dict()`` gives it (module versions: plain data, which weightio
    does not need and drops). Any other attribute could change what the object is to the code
    that reads it (an instance attribute ``items`` shadows the method), so the view weightio
    takes could differ from torch's: refused, naming the attribute.
    """
    if type(inst) is not OrderedDict:
        raise MalformedFileError(
            f"the pickle sets state on a {type(inst).__name__.lstrip('_')}; torch.save gives "
            "state only to the OrderedDict of a state dict"
        )
    if type(state) not in (dict, OrderedDict) or not all(isinstance(k, str) for k in state):
        raise UnsafeFormatError(
            f"the pickle gives an OrderedDict state of type {type(state).__name__} (slots or a "
            "non-dict state); torch.save gives it only a '_metadata' attribute, so weightio "
            "refuses it"
        )
    extra = sorted(k for k in state if k != "_metadata")
    if extra:
        raise UnsafeFormatError(
            f"the pickle gives the state dict the attribute(s) {', '.join(map(repr, extra[:5]))} "
            "through BUILD; an attribute can change what the dict is to the code reading it, so "
            "torch's view and weightio's could differ. torch.save gives it only '_metadata'; "
            "re-save the weights with torch.save(model.state_dict(), path)"
        )
    if "_metadata" in state and not _plain_metadata(state["_metadata"]):
        raise UnsafeFormatError(
            "the state dict's '_metadata' holds something other than plain names and numbers"
        )


def storage_pid(pid: Any, file: Path, length: int) -> tuple[str, np.dtype, int]:
    """Check a ``("storage", type, key, location, numel[, view])`` persistent id."""
    if (
        not isinstance(pid, tuple)
        or len(pid) != length
        or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType)
        or not isinstance(pid[2], str)
        or not _KEY.fullmatch(pid[2])
        or pid[2] in (".", "..")
        or not isinstance(pid[3], str)
        or type(pid[4]) is not int
        or pid[4] < 0
    ):
        raise MalformedFileError(f"unreadable storage reference {received(pid)}", file=file)
    if not _LOCATION.fullmatch(pid[3]):
        raise MalformedFileError(
            f"storage {pid[2]!r} is tagged with device {pid[3][:40]!r}, which torch.load cannot "
            "restore", file=file,
        )
    if length == 6 and pid[5] is not None:
        raise UnsupportedTensorError("holds a legacy storage view; re-save with torch >= 1.6",
                                     file=file)
    return pid[2], pid[1].dtype, pid[4]


def load_pickle(data: Any, start: int, end: int, file: Path,
                 persistent_load: Callable[[Any], Any]) -> tuple[Any, int]:
    """Run one pickle of ``data[start:end]``; every failure is a typed error naming ``file``."""
    try:
        return run_pickle(data, start, end, resolve_global=_resolve_global, callables=_callable,
                          persistent_load=persistent_load, build=_build)
    except WeightioError as exc:
        raise exc.with_file(file) from None
    except PickleError as exc:
        raise MalformedFileError(
            f"the pickle is unreadable ({exc}); the file is truncated or not a PyTorch file",
            file=file,
        ) from None
    except MemoryError:
        raise ResourceLimitError(
            "the pickle builds more objects than memory holds; the file is corrupt or hostile",
            file=file,
        ) from None
