"""PyTorch's rows in the table of sources and targets: modules, state dicts, checkpoint files,
``.pt2`` programs (torch.export), and the ``.pt2`` and ``.pt`` (state dict) targets.

Checkpoint files are read by weightio's data-only unpickler, without torch; torch is imported
only to trace a live module, to build one, or to write one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from weightio.errors import UnsupportedSourceError, WeightioError
from weightio.format.archive import Archive
from weightio.frameworks.table import (
    FileSource,
    ObjectSource,
    Runner,
    Source,
    Target,
    from_modules,
    no_options,
)
from weightio.runtime.probes import probe_inputs

#: The first bytes of a legacy (pre-zip) ``torch.save`` file: pickle protocol 2 and a long.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a"


def _open_module(module: Any, **options: Any) -> Source:
    from weightio.frameworks.torch.read.export import read_module
    from weightio.frameworks.torch.write.build import run_torch

    archive = read_module(module, **options)
    return Source(archive, "torch", lambda xs: run_torch(module, xs), module)


def _open_state_dict(state_dict: Mapping[str, Any], **options: Any) -> Source:
    from weightio.frameworks.torch.files.state_dict import read_state_dict

    return Source(read_state_dict(state_dict, **options), "torch",
                  not_run="a state dict holds weights only, with no module to run")


def _open_checkpoint(path: Path, **options: Any) -> Source:
    """A checkpoint read by the data-only unpickler; with ``trust_pickle=True``, by torch.load
    with its code run, so a whole-module save (``torch.save(model)``) reads as the live module.
    """
    if options.pop("trust_pickle", False):
        return _open_trusted(path, **options)
    from weightio.frameworks.torch.files.pickle import read_checkpoint

    no_options(options, "a PyTorch checkpoint", allowed=("key",))
    return Source(read_checkpoint(path, **options), "torch",
                  not_run="a checkpoint file holds weights only, with no module to run")


def _open_trusted(path: Path, **options: Any) -> Source:
    import torch

    from weightio.frameworks.torch.files.state_dict import load_trusted, read_loaded

    loaded = load_trusted(path)
    if isinstance(loaded, torch.nn.Module):
        key = options.pop("key", None)
        if key is not None:
            raise UnsupportedSourceError(
                f"holds a whole {type(loaded).__name__} module, not a checkpoint: --key / key= "
                f"{key!r} does not apply", file=path,
            )
        try:
            return _open_module(loaded.eval(), **options)
        except WeightioError as exc:
            raise exc.with_file(path) from exc
    no_options(options, "a PyTorch checkpoint", allowed=("key",))
    return Source(read_loaded(loaded, path, options.get("key")), "torch",
                  not_run="a checkpoint file holds weights only, with no module to run")


def _open_program(path: Path, **options: Any) -> Source:
    """A ``torch.export`` program, checked for code before torch loads it (``files/pt2.py``)
    unless ``trust_pickle=True``; read through the module reader (``read/program.py``).
    """
    from weightio.frameworks.torch.files.pt2 import load_program, program_nesting
    from weightio.frameworks.torch.read.program import read_program, run_program

    trusted = bool(options.pop("trust_pickle", False))
    no_options(options, "a torch.export program (.pt2)", allowed=("trust_pickle",))
    from weightio.frameworks.torch.nesting import regrouped

    program = load_program(path, trusted=trusted)
    archive = regrouped(read_program(program, source_file=path), program_nesting(path))
    return Source(archive, "torch", lambda xs: run_program(program, xs), program)


def _load_into(archive: Archive, module: Any, **options: Any) -> Any:
    from weightio.frameworks.torch.load import load_into_torch

    return load_into_torch(archive, module, **options)


def _build_module(archive: Archive, *, keep_int8: bool = False, **options: Any) -> tuple[Any, Runner | None]:
    from weightio.frameworks.torch.write.build import run_torch, to_torch

    module = to_torch(archive, keep_int8=keep_int8)
    return module, lambda xs: run_torch(module, xs)


def _build_program(
    archive: Archive, *, seed: int = 0, keep_int8: bool = False, **options: Any
) -> tuple[Any, Runner | None]:
    """The ``.pt2`` file's bytes, made now (torch.export, then ``torch.export.save`` into
    memory), and a runner of the program loaded back from those bytes.

    So the proof runs what the file holds (the program as torch will load it, not the module
    it was exported from), and the export, seconds of dynamo imports, happens while a source
    witness process runs (``convert``), not after the proof; writing is then a copy of bytes.
    The example inputs (saved in the file as its sample inputs) are the seeded probe's.
    """
    import io

    from weightio.frameworks.torch.common import torch_module
    from weightio.frameworks.torch.files.state_dict import export_program, program_bytes
    from weightio.frameworks.torch.write.build import run_program

    module, _ = _build_module(archive, keep_int8=keep_int8)
    example = tuple(probe_inputs(archive.spec, seed=seed, samples=2))
    data = program_bytes(export_program(module, example), module)
    loaded = torch_module("save_pt2").export.load(io.BytesIO(data)).module(check_guards=False)
    return data, lambda xs: run_program(loaded, xs)


def _build_state_dict(
    archive: Archive, *, keep_int8: bool = False, **options: Any
) -> tuple[Any, Runner | None]:
    """A state dict needs no architecture; a full archive is still built, so it is verified."""
    if archive.spec.weights_only:
        return None, None
    return _build_module(archive, keep_int8=keep_int8)


def _write_pt2(archive: Archive, native: bytes, destination: Path, **options: Any) -> Path:
    """Write the bytes ``_build_program`` made (and the proof ran) to ``destination``, atomically."""
    from weightio.format.atomic import atomic_write

    with atomic_write(destination, overwrite=options.get("overwrite", True)) as handle:
        handle.write(native)
    return destination


def _write_state_dict(archive: Archive, native: Any, destination: Path, **options: Any) -> Path:
    from weightio.frameworks.torch.files.state_dict import save_archive_state_dict, save_state_dict

    if native is None:
        return save_archive_state_dict(archive, destination)
    return save_state_dict(native, destination)


#: This package's rows of the table, registered in order by ``weightio.frameworks``.
ROWS = (
    ObjectSource(
        "torch", "torch.nn.Module", from_modules("torch.nn."), _open_module, load_into=_load_into
    ),
    ObjectSource("torch", "state dicts", lambda obj: isinstance(obj, Mapping), _open_state_dict),
    FileSource(
        "torch",
        "PyTorch checkpoints",
        _open_checkpoint,
        suffixes=(".pt", ".pth", ".bin"),
        sniff=lambda head: head.startswith(LEGACY_MAGIC),
        listed_as=".pt, .pth, .bin",
    ),
    FileSource(
        "torch",
        "torch.export programs",
        _open_program,
        suffixes=(".pt2",),
        listed_as=".pt2",
    ),
    Target("pt2", "torch", (".pt2",), _build_program, _write_pt2, what="torch.export"),
    Target(
        "pt",
        "torch",
        (".pt", ".pth"),
        _build_state_dict,
        _write_state_dict,
        weights_only=True,
        what="state dict",
    ),
)
