"""PyTorch state dicts and files: read them into weights-only archives, write them atomically.

Files are opened with ``torch.load(weights_only=True)`` and never anything less: its unpickler
builds only tensors and plain containers, and refuses every other global before importing it.
A refusal is reported as ``UnsafeFormatError`` naming the global; weightio never retries with
``weights_only=False`` (that retry is how "safe" loaders end up executing downloaded code).

``weights_only=True`` itself was bypassable before PyTorch 2.6 (CVE-2025-32434: a TorchScript
archive renamed ``.pt`` ran code through it), so ``torch.load`` is only called on torch >=
``MIN_SAFE_TORCH``; older versions are refused with the way out (upgrade, or ``weightio.read``,
whose torch-free reader never calls torch.load).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from weightio.errors import (
    MalformedFileError,
    UnsafeFormatError,
    UnsupportedTensorError,
)
from weightio.format.archive import Archive
from weightio.format.atomic import atomic_write
from weightio.format.provenance import provenance
from weightio.format.weights_only import archive_from_state_dict
from weightio.format.zip import is_zip
from weightio.frameworks.torch.common import (
    is_torch_tensor,
    loaded_torch_version,
    numpy_to_tensor,
    qualified_name,
    tensor_to_numpy,
    torch_module,
)
from weightio.frameworks.torch.files.checkpoints import (
    check_torch_path,
    pick_state_dict,
)
from weightio.frameworks.torch.files.pickle import load_checkpoint


def _state_dict_arrays(state_dict: Mapping[str, Any], *, copy: bool) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise UnsupportedTensorError(
                f"state dict keys must be strings. Received: key={key!r}", tensor=str(key)
            )
        if is_torch_tensor(value):
            arrays[key] = tensor_to_numpy(value, key=key, copy=copy)
        elif isinstance(value, np.ndarray):
            arrays[key] = np.array(value, copy=True) if copy else value
        else:
            raise UnsupportedTensorError(
                "is not a tensor; a state dict maps names to torch tensors or numpy arrays. "
                f"Received: type={qualified_name(value)}",
                tensor=key,
            )
    return arrays


def read_state_dict(
    state_dict: Mapping[str, Any], *, name: str = "state_dict", source_file: Any = None
) -> Archive:
    """Archive a bare state dict (weights only): tensor keys are exactly the state dict's keys.

    Values may be torch tensors or numpy arrays; each keeps its own dtype, bit-exact (bfloat16
    and float8 included). The result can be inspected, diffed, saved and loaded into a model
    with ``load_into_torch``; it cannot be run or converted, having no architecture.

    Raises:
        UnsupportedTensorError: a value that is not a plain dense tensor, named by key.
    """
    return _archive(state_dict, name=name, source_file=source_file, copy=True)


def _archive(
    state_dict: Mapping[str, Any], *, name: str, source_file: Any, copy: bool,
    source_key: str | None = None,
) -> Archive:
    arrays = _state_dict_arrays(state_dict, copy=copy)
    prov = provenance(
        "torch", framework_version=loaded_torch_version(), source_class=None,
        source_file=source_file, source_key=source_key,
    )
    return archive_from_state_dict(arrays, name=name, provenance=prov)


def _container_kind(path: Path) -> str:
    """``zip`` (torch.save since 1.6), ``legacy`` (a bare pickle), else refuse."""
    if is_zip(path):
        return "zip"
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode: the pre-1.6 torch.save format
        return "legacy"
    raise MalformedFileError(
        "is neither a torch.save zip archive nor a legacy torch pickle; is it a .pt file?",
        file=path,
    )


MIN_SAFE_TORCH = (2, 6)


def _release(version: str) -> tuple[int, int]:
    """``"2.13.0+cpu"`` -> ``(2, 13)``; unparsable versions count as old (refused)."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def check_safe_torch(version: str, path: Path) -> None:
    """Refuse to hand an untrusted file to a torch.load with known weights_only bypasses."""
    if _release(version) < MIN_SAFE_TORCH:
        wanted = ".".join(map(str, MIN_SAFE_TORCH))
        raise UnsafeFormatError(
            f"torch {version} has known torch.load(weights_only=True) bypasses "
            f"(CVE-2025-32434); upgrade to torch>={wanted}, or read the file with "
            "weightio.read(), whose torch-free reader never calls torch.load",
            file=path,
        )


def _load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a file weightio's own unpickler has read first.

    torch's unpickler is bounded in what it builds, not in what building costs: a pickle whose
    memo makes a dict key of 40 levels of one shared tuple sends ``hash()`` on a 2**40-step walk
    inside C code, which no timeout interrupts. weightio's opcode machine (``load_checkpoint``,
    the torch-free reader) refuses that and every other hostile structure it knows, in time
    linear in the file's opcodes and with the same verdicts on globals, so it reads the pickle
    before torch does. Tensors stay memory maps there: the extra pass costs the pickle, not the
    weights.
    """
    torch = torch_module("reading .pt files")
    check_safe_torch(torch.__version__, path)
    load_checkpoint(path)
    mmap = _container_kind(path) == "zip"  # torch can memory-map only the zip format
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        match = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
        refused = f"the global {match.group(1)}" if match else "an operation"
        raise UnsafeFormatError(
            f"loading it would need {refused}, which PyTorch's weights-only loader refuses "
            "because unpickling it can run code. weightio never loads such files unsafely; "
            "re-save the weights from trusted code with torch.save(model.state_dict(), path)",
            file=path,
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError) as exc:
        raise MalformedFileError(
            f"torch.load could not read it ({type(exc).__name__}: {str(exc)[:300]}); the file "
            "is truncated or not a PyTorch file",
            file=path,
        ) from None


def _pick_state_dict(obj: Any, path: Path, key: str | None) -> tuple[Mapping[str, Any], str | None]:
    """The state dict in a loaded object (see ``weightio.frameworks.torch.files.checkpoints``)."""
    return pick_state_dict(obj, path, key, is_tensor=is_torch_tensor)


def read_torch_file(path: os.PathLike[str] | str, *, key: str | None = None) -> Archive:
    """Read a ``.pt``/``.pth``/``.bin`` state dict into a weights-only archive, safely.

    Args:
        path: A file written by ``torch.save``.
        key: For a training checkpoint (``{"model": state_dict, "optimizer": ...}``), the entry
            holding the state dict.

    Raises:
        SourceNotFoundError: no such file.
        UnsupportedSourceError: not a file, or a suffix this reader does not take.
        UnsafeFormatError: the pickle needs a global the weights-only loader refuses.
        MalformedFileError: unreadable, or not a state dict (the message lists usable keys).
    """
    path = Path(path)
    check_torch_path(path)
    # Tensors just loaded belong to nobody else: no copy needed to keep the archive immutable.
    return read_loaded(_load(path), path, key)


def load_trusted(path: os.PathLike[str] | str) -> Any:
    """``torch.load(weights_only=False)``: what a file holds, a whole ``nn.Module`` included.

    This runs the code the pickle names, so it is only ever called on the user's word
    (``trust_pickle=True``, CLI ``--trust-pickle``) for a file they trust. The module's classes
    must be importable, as ``torch.load`` needs them.

    Raises:
        MalformedFileError: torch could not load it (the message keeps torch's reason).
    """
    torch = torch_module("reading a whole-module .pt file")
    path = Path(path)
    check_torch_path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the file's own code may raise anything; all mean "cannot load"
        raise MalformedFileError(
            f"torch.load(weights_only=False) could not load it ({type(exc).__name__}: "
            f"{str(exc)[:300]}); a whole-module save needs the module's classes importable",
            file=path,
        ) from None


def read_loaded(obj: Any, path: Path, key: str | None = None) -> Archive:
    """A weights-only archive of the state dict inside an object ``torch.load`` returned."""
    state_dict, entry = _pick_state_dict(obj, path, key)
    return _archive(state_dict, name=path.stem or "state_dict", source_file=path, copy=False,
                    source_key=entry)


def save_state_dict(module: Any, path: os.PathLike[str] | str) -> Path:
    """Write ``module.state_dict()`` with ``torch.save``, atomically; return the path."""
    torch = torch_module("save_state_dict")
    path = Path(path)
    with atomic_write(path) as handle:
        torch.save(module.state_dict(), handle)
    return path


def save_archive_state_dict(archive: Archive, path: os.PathLike[str] | str) -> Path:
    """Write an archive's tensors as a torch state dict (keys = archive keys), atomically.

    Needs no architecture, so it serves weights-only archives too; every tensor keeps its dtype
    and bits (bfloat16 and float8 included). Returns the path written.
    """
    torch = torch_module("save_archive_state_dict")
    path = Path(path)
    state = OrderedDict((key, numpy_to_tensor(array)) for key, array in archive.tensors.items())
    with atomic_write(path) as handle:
        torch.save(state, handle)
    return path


def save_pt2(module: Any, path: os.PathLike[str] | str, example_inputs: tuple[Any, ...]) -> Path:
    """Export ``module`` with ``torch.export`` and write the ``.pt2`` program atomically.

    Args:
        module: The module to export (exported as is; call ``.eval()`` first for inference).
        path: Target file, conventionally ending in ``.pt2``.
        example_inputs: Tensors (or numpy arrays) the module accepts, one per input.
    """
    path = Path(path)
    data = program_bytes(export_program(module, example_inputs), module)
    with atomic_write(path) as handle:
        handle.write(data)
    return path


def export_program(module: Any, example_inputs: tuple[Any, ...]) -> Any:
    """``torch.export.export(module, example_inputs)`` with the batch axis left free."""
    torch = torch_module("save_pt2")
    examples = tuple(
        numpy_to_tensor(x) if isinstance(x, np.ndarray) else x for x in example_inputs
    )
    # The batch axis stays free, so the program serves any batch size, as the module did.
    dynamic = tuple({0: torch.export.Dim.DYNAMIC} if x.dim() > 0 else None for x in examples)
    with warnings.catch_warnings():
        # nn.LSTM/GRU/RNN rebuild their _flat_weights list in forward, which torch.export reports
        # as "tensor attributes ... assigned during export"; the weights are the module's own
        # parameters, the program is verified against it, and the user cannot act on the warning.
        warnings.filterwarnings(
            "ignore", message=r"The tensor attributes .*_flat_weights.* were assigned during export"
        )
        return torch.export.export(module, examples, dynamic_shapes=dynamic)


def program_bytes(program: Any, module: Any = None) -> bytes:
    """The ``.pt2`` file of ``program``, as ``torch.export.save`` writes it, in memory.

    When ``module`` (the one exported) holds nested-model groups (``NestedModel``), they are
    saved beside the program (``weightio.frameworks.torch.nesting``), so reading the file gives
    ``outer/inner`` names back.
    """
    import io

    from weightio.frameworks.torch.nesting import (
        EXTRA_FILE,
        NO_NESTING,
        module_nesting,
        nesting_json,
    )

    torch = torch_module("save_pt2")
    nesting = module_nesting(module) if module is not None else NO_NESTING
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={EXTRA_FILE: nesting_json(nesting)}
                      if nesting.groups else None)
    return buffer.getvalue()
