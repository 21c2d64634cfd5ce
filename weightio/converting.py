"""``weightio.convert``: read a source, build the target, prove they agree, then write.

Nothing is written until verification has passed: a failed check raises ``VerificationError``
and leaves no output file. The archive records the proof (probe seed, tolerances, worst errors),
so anyone can see later what was shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from weightio.archive import Archive, refuse_existing, save
from weightio.errors import (
    UnsupportedSourceError,
    VerificationError,
    WeightioError,
    WeightsOnlyArchiveError,
)
from weightio.nonfinite import NonFinite, describe_nonfinite, nonfinite_note, scan_nonfinite
from weightio.reading import open_source
from weightio.spec import VerificationRecord
from weightio.verification import describe, probe_inputs, verify_conversion

Target = Literal["archive", "keras", "pt2", "pt", "skops", "joblib"]

_TARGET_BY_SUFFIX: dict[str, Target] = {
    ".safetensors": "archive",
    ".keras": "keras",
    ".pt2": "pt2",
    ".pt": "pt",
    ".pth": "pt",
    ".skops": "skops",
    ".joblib": "joblib",
}


@dataclass
class ConversionResult:
    """What ``convert`` did: where it wrote, which target, the archive and the proof."""

    destination: Path
    target: Target
    archive: Archive
    verification: VerificationRecord | None
    #: Tensors holding NaN/+-inf (copied bit-exactly), found while verifying.
    nonfinite: list[NonFinite] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable lines: the figures per output and where the result went."""
        lines = describe(self.verification) if self.verification else ["verification skipped"]
        if self.nonfinite:
            lines.append("warning: the weights hold non-finite values, copied bit-exactly: "
                         + describe_nonfinite(self.nonfinite))
        return [*lines, f"wrote {self.destination} ({self.target})"]


def target_for(destination: os.PathLike[str] | str, to: str | None = None) -> Target:
    """Pick the target from ``to`` or the destination's extension."""
    if to is not None:
        if to not in ("archive", "keras", "pt2", "pt", "skops", "joblib"):
            raise UnsupportedSourceError(
                f"unknown target {to!r}; choose archive, keras, pt2, pt, skops or joblib"
            )
        return to  # type: ignore[return-value]
    suffix = Path(destination).suffix.lower()
    try:
        return _TARGET_BY_SUFFIX[suffix]
    except KeyError:
        raise UnsupportedSourceError(
            f"cannot tell the target from {suffix or 'no extension'!r}; use .safetensors "
            "(archive), .keras, .pt2 (torch.export), .pt (state dict), .skops or .joblib "
            "(scikit-learn), or pass to=",
            file=destination,
        ) from None


def convert(
    source: Any,
    destination: os.PathLike[str] | str,
    *,
    to: str | None = None,
    verify: bool = True,
    seed: int = 0,
    samples: int = 8,
    atol: float | None = None,
    rtol: float | None = None,
    max_shard_size: int | str | None = None,
    overwrite: bool = True,
    **options: Any,
) -> ConversionResult:
    """Convert ``source`` into ``destination``, verifying outputs before writing anything.

    Args:
        source: Anything ``weightio.read`` accepts.
        destination: Output path; its extension picks the target unless ``to`` is given:
            ``.safetensors`` archive, ``.keras``, ``.pt2`` (torch.export), ``.pt`` state dict.
            ``.skops`` / ``.joblib`` (a fitted scikit-learn estimator, see ``to_sklearn``).
        to: ``"archive"``, ``"keras"``, ``"pt2"``, ``"pt"``, ``"skops"`` or ``"joblib"``.
        verify: Run source, target and the numpy runtime on seeded inputs and compare.
        seed: Seed of the probe inputs.
        samples: Batch size of the probe.
        atol: Absolute tolerance (scaled by the output's magnitude); default by dtype.
        rtol: Relative tolerance; default by dtype.
        max_shard_size: For an archive target, write shards of at most this size (``"2GB"``)
            plus a ``.safetensors.index.json``; the result's ``destination`` is the index.
        overwrite: ``False`` refuses an existing destination (or a sharded set of that name)
            with ``TargetExistsError`` before anything is read; for archives the check is
            repeated, atomically, when the file is published.
        **options: Passed to the reader (``example_input=``, ``key=``, ``architecture=``; for scikit-learn
            sources ``head=``, ``dtype=``, ``trust_pickle=``).

    Raises:
        VerificationError: the outputs differ beyond tolerance; nothing was written.
    """
    destination = Path(destination)
    target = target_for(destination, to)
    if not overwrite:
        refuse_existing(destination, sharded_too=target == "archive")
    if max_shard_size is not None and target != "archive":
        raise UnsupportedSourceError(
            f"max_shard_size applies to .safetensors archives, not to a {target} target",
            file=destination,
        )
    from weightio.source_digest import deferring_source_digests, pick

    # Converting to one archive file: hash the source file while its tensors are copied.
    with deferring_source_digests(target == "archive") as pending:
        src = open_source(source, **options)
    try:
        source_file = source if isinstance(source, (str, os.PathLike)) else None
        return _convert_opened(src, destination, target, pick(pending, src.archive), verify=verify,
                               seed=seed, samples=samples, atol=atol, rtol=rtol,
                               max_shard_size=max_shard_size, source_file=source_file,
                               overwrite=overwrite)
    finally:
        for digest in pending:
            digest.cancel()


def _convert_opened(
    src: Any,
    destination: Path,
    target: Target,
    source_sha256: Any,
    *,
    verify: bool,
    seed: int,
    samples: int,
    atol: float | None,
    rtol: float | None,
    max_shard_size: int | str | None,
    source_file: os.PathLike[str] | str | None = None,
    overwrite: bool = True,
) -> ConversionResult:
    archive = src.archive
    try:
        native, runner = _build_target(archive, target)
    except WeightioError as exc:  # name the source file the unbuildable layer came from
        if source_file is not None:
            raise exc.with_file(source_file) from exc
        raise

    record = None
    if verify and not archive.spec.weights_only:
        record = verify_conversion(
            archive,
            target=target if target != "archive" else "archive",
            source_name=src.framework if src.runner else None,
            source_runner=src.runner,
            target_runner=runner,
            seed=seed,
            samples=samples,
            atol=atol,
            rtol=rtol,
        )
        nonfinite = scan_nonfinite(archive)
        if not record.passed:
            raise VerificationError(
                "converted model differs from its source beyond tolerance; nothing was written. "
                + " | ".join(describe(record)) + nonfinite_note(nonfinite),
                file=destination,
            )
        archive = archive.with_spec(
            archive.spec.model_copy(update={"verification": [*archive.spec.verification, record]})
        )

    if not overwrite:  # the checks and the build took time: look again before writing
        refuse_existing(destination, sharded_too=target == "archive")
    written = _write(archive, native, target, destination, seed=seed, max_shard_size=max_shard_size,
                     source_sha256=source_sha256, overwrite=overwrite)
    return ConversionResult(written, target, archive, record, nonfinite if record else [])


def _build_target(archive: Archive, target: Target) -> tuple[Any, Any]:
    """Build the native target model and a runner for it (None for a plain archive)."""
    if target == "archive":
        return None, None
    if archive.spec.weights_only:
        if target == "pt":
            return None, None  # a state dict needs no architecture
        raise WeightsOnlyArchiveError(
            "this source holds weights only (a bare state dict) with no architecture, so no "
            f"{target} model can be built; convert it to .safetensors or .pt, or copy it into "
            "a model with weightio.load_into",
        )
    if target in ("skops", "joblib"):
        from weightio.adapters import sklearn as sklearn_adapter

        estimator = sklearn_adapter.to_sklearn(archive)
        return estimator, sklearn_adapter.runner_for(estimator, archive)
    if target == "keras":
        from weightio.reading import _keras_installed

        if not _keras_installed():  # written by weightio itself; verified against the runtime
            return None, None
        from weightio.adapters import keras as keras_adapter

        model = keras_adapter.to_keras(archive)
        return model, lambda xs: keras_adapter.run_keras(model, xs)
    from weightio.adapters import torch as torch_adapter

    module = torch_adapter.to_torch(archive)
    return module, lambda xs: torch_adapter.run_torch(module, xs)


def _write(
    archive: Archive,
    native: Any,
    target: Target,
    destination: Path,
    *,
    seed: int,
    max_shard_size: int | str | None = None,
    source_sha256: Any = None,
    overwrite: bool = True,
) -> Path:
    if target == "archive":
        return save(archive, destination, max_shard_size=max_shard_size,
                    source_sha256=source_sha256, overwrite=overwrite)
    if target in ("skops", "joblib"):
        from weightio.adapters import sklearn_files

        sklearn_files.save_estimator(native, destination)
    elif target == "keras" and native is None:
        from weightio.adapters.keras_files_write import write_keras_file

        write_keras_file(archive, destination)
    elif target == "keras":
        from weightio.adapters import keras as keras_adapter

        keras_adapter.save_keras(native, destination)
    elif target == "pt" and native is None:
        from weightio.adapters import torch as torch_adapter

        torch_adapter.save_archive_state_dict(archive, destination)
    elif target == "pt":
        from weightio.adapters import torch as torch_adapter

        torch_adapter.save_state_dict(native, destination)
    else:
        from weightio.adapters import torch as torch_adapter

        example = tuple(probe_inputs(archive.spec, seed=seed, samples=2))
        torch_adapter.save_pt2(native, destination, example)
    return destination
