"""Finding the state dict inside what a checkpoint file holds, the same way for every reader.

A ``.pt`` file may hold a state dict, or a training checkpoint (``{"model": sd, "optimizer": …}``).
Both the torch reader and the torch-free reader use this one function, so they accept and refuse
exactly the same files with the same messages; only the test for "is a tensor" differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from weightio.errors import MalformedFileError, UnsupportedSourceError, received
from weightio.format.paths import check_regular

#: The suffixes ``torch.save`` files go by (a ``.pt2`` is a torch.export program, not one).
TORCH_FILE_SUFFIXES = (".pt", ".pth", ".bin")


def is_state_dict(value: Any, is_tensor: Callable[[Any], bool], *, allow_empty: bool) -> bool:
    """A mapping of string keys to tensors (non-empty unless ``allow_empty``)."""
    return (
        isinstance(value, Mapping)
        and (allow_empty or len(value) > 0)
        and all(isinstance(k, str) and is_tensor(v) for k, v in value.items())
    )


def pick_state_dict(
    obj: Any, path: Path, key: str | None, *, is_tensor: Callable[[Any], bool]
) -> tuple[Mapping[str, Any], str | None]:
    """The state dict in ``obj`` and the checkpoint entry it came from (``None``: ``obj`` itself).

    ``obj`` itself when it is a state dict; else ``obj[key]``; with no ``key``, the one entry
    that is a state dict when there is exactly one (a training checkpoint ``{"model": sd,
    "optimizer": …, "epoch": …}``), so the caller can say which it took.

    Raises:
        MalformedFileError: not a mapping; a checkpoint without ``key=`` holding no state dict or
            several (listing them); ``key`` missing or not a state dict.
    """
    if not isinstance(obj, Mapping):
        raise MalformedFileError(
            f"holds a {type(obj).__name__}, not a state dict (a dict of tensors); save "
            "model.state_dict() instead of the model or tensor",
            file=path,
        )
    found = [received(k, 80) for k, v in obj.items()
             if is_state_dict(v, is_tensor, allow_empty=False)]
    if key is None:
        if is_state_dict(obj, is_tensor, allow_empty=True):
            return obj, None
        candidates = [k for k, v in obj.items()
                      if isinstance(k, str) and is_state_dict(v, is_tensor, allow_empty=False)]
        if len(candidates) == 1:
            return obj[candidates[0]], candidates[0]
        hint = (
            f"it holds several state dicts; pick one with key= (CLI: --key): {', '.join(found[:20])}"
            if found else "none of its entries is a state dict either"
        )
        raise MalformedFileError(
            "is a checkpoint whose values are not all tensors (keys: "
            f"{', '.join(received(k, 80) for k in list(obj)[:20])}); {hint}",
            file=path,
        )
    if key not in obj:
        raise MalformedFileError(
            f"has no entry {received(key, 80)}; entries holding state dicts: "
            f"{', '.join(found[:20]) or 'none'}",
            file=path,
        )
    if not is_state_dict(obj[key], is_tensor, allow_empty=False):
        raise MalformedFileError(
            f"entry {key!r} is a {type(obj[key]).__name__}, not a state dict of tensors",
            file=path,
        )
    return obj[key], key


def check_torch_path(path: Path) -> None:
    """Refuse what is not a torch.save file (missing, a folder, a .pt2 program, another suffix)."""
    check_regular(path)  # missing, a folder, a FIFO, socket or device: refused before any open
    if path.suffix.lower() == ".pt2":
        raise UnsupportedSourceError(
            "is a torch.export program (.pt2), not a state dict; read it with "
            "weightio.read(path), which checks it for code before torch.export.load sees it",
            file=path,
        )
    if path.suffix.lower() not in TORCH_FILE_SUFFIXES:
        raise UnsupportedSourceError(
            f"has suffix {path.suffix!r}; PyTorch checkpoints are read from "
            f"{', '.join(TORCH_FILE_SUFFIXES)} files saved with torch.save",
            file=path,
        )
