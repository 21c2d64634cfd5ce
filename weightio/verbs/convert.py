"""``weightio.convert``: read a source, build the target, prove they agree, then write.

Nothing is written until verification has passed: a failed check raises ``VerificationError``
and leaves no output file. The archive records the proof (probe seed, tolerances, worst errors),
so anyone can see later what was shown.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from weightio.analysis.nonfinite import (
    NonFinite,
    describe_nonfinite,
    nonfinite_note,
    scan_nonfinite,
)
from weightio.errors import (
    UnsupportedSourceError,
    VerificationError,
    WeightioError,
    WeightsOnlyArchiveError,
)
from weightio.format import remote
from weightio.format.archive import Archive, plain
from weightio.format.store import refuse_existing
from weightio.frameworks.table import target_for as target_for_path
from weightio.frameworks.table import target_named
from weightio.options import check_count, check_seed, check_tolerance
from weightio.spec.model import VerificationRecord
from weightio.verbs.proof import describe, unverified, verify_conversion
from weightio.verbs.read import open_source

#: The name of a conversion target (``weightio.frameworks.table`` holds the rows).
TargetName = Literal["archive", "keras", "pt2", "pt", "skops", "joblib"]


@dataclass
class ConversionResult:
    """What ``convert`` did: where it wrote, which target, the archive and the proof."""

    #: Where it went: a path, or the URL it was uploaded to.
    destination: Path | str
    target: TargetName
    archive: Archive
    #: The proof, as recorded in the archive: ``status`` says whether the source itself was run
    #: (``verified``), only weightio's reading was compared (``partial``), or nothing was.
    verification: VerificationRecord | None
    #: Tensors holding NaN/+-inf (copied bit-exactly), found while verifying.
    nonfinite: list[NonFinite] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable lines: the figures per output and where the result went."""
        lines = describe(self.verification) if self.verification else ["not verified"]
        if self.nonfinite:
            lines.append("warning: the weights hold non-finite values, copied bit-exactly: "
                         + describe_nonfinite(self.nonfinite))
        return [*lines, f"wrote {self.destination} ({self.target})"]

    def to_json(self) -> str:
        """The result for machines: where it went, the recorded proof, non-finite weights."""
        import dataclasses
        import json

        return json.dumps({
            "destination": str(self.destination),
            "target": self.target,
            "source_key": self.archive.spec.provenance.source_key,
            "verification": (None if self.verification is None
                             else self.verification.model_dump(mode="json")),
            "nonfinite": [dataclasses.asdict(item) for item in self.nonfinite],
        }, indent=2)


def target_for(destination: os.PathLike[str] | str, to: str | None = None) -> TargetName:
    """Pick the target from ``to`` or the destination's extension."""
    row = target_named(to) if to is not None else target_for_path(destination)
    return row.name  # type: ignore[return-value]


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
    digest: str | None = None,
    progress: bool = False,
    keep_int8: bool = False,
    nested: bool | None = None,
    **options: Any,
) -> ConversionResult:
    """Convert ``source`` into ``destination``, verifying outputs before writing anything.

    Args:
        source: Anything ``weightio.read`` accepts.
        destination: Output path or fsspec URL (made locally, then uploaded); its extension
            picks the target unless ``to`` is given:
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
        digest: For an archive target, the digest recorded for every tensor and the source file:
            ``"blake3"`` (default) or ``"sha256"``.
        progress: Draw a progress bar on stderr while an archive over a few hundred MB is written.
        keep_int8: For a ``.pt2`` or ``.pt`` target, keep int8-quantised conv/dense weights
            int8 in the module (``to_torch(archive, keep_int8=True)``: ``QuantizedLinear`` /
            ``QuantizedConv`` decoding them in ``forward``, a ~4x smaller file); other encoded
            layers are dequantised and named in a ``UserWarning``.
        nested: For a ``.keras`` target, how a nested model's layers (``outer/inner`` names)
            are written: ``None`` (default) as nested models where each group is a clean
            sub-graph, else flat with a warning; ``True`` nested or ``NestingError``; ``False``
            flat (``to_keras(archive, nested=...)``). Nesting needs Keras installed: without
            it the file is written flat (with a warning; ``True`` is refused).
        **options: Passed to the reader (``example_input=``, ``key=``, ``architecture=``; for scikit-learn
            sources ``head=``, ``dtype=``, ``trust_pickle=``).

    Raises:
        VerificationError: the outputs differ beyond tolerance; nothing was written.
    """
    if remote.is_remote(destination):
        return _convert_to_url(
            source, str(destination), to=to, verify=verify, seed=seed, samples=samples, atol=atol,
            rtol=rtol, max_shard_size=max_shard_size, overwrite=overwrite, digest=digest,
            progress=progress, keep_int8=keep_int8, nested=nested, **options,
        )
    destination = remote.as_local(destination)
    # every option is checked before any work: a bad value must not cost a read first
    seed = check_seed(seed)
    samples = check_count("samples", samples)
    atol = None if atol is None else check_tolerance("atol", atol)
    rtol = None if rtol is None else check_tolerance("rtol", rtol)
    destination = Path(destination)
    target = target_for(destination, to)
    if not overwrite:
        refuse_existing(destination, sharded_too=target == "archive")
    if keep_int8 and target not in ("pt", "pt2"):
        raise UnsupportedSourceError(
            f"keep_int8 (--keep-int8) applies to .pt2 and .pt targets, not to a {target} target",
            file=destination,
        )
    if nested is not None and target != "keras":
        raise UnsupportedSourceError(
            f"nested (--nested/--flat) applies to .keras targets, not to a {target} target",
            file=destination,
        )
    if max_shard_size is not None and target != "archive":
        raise UnsupportedSourceError(
            f"max_shard_size applies to .safetensors archives, not to a {target} target",
            file=destination,
        )
    from weightio.format.digests import deferring_source_digests, pick
    from weightio.format.hashing import check_algorithm

    algorithm = check_algorithm(digest)
    # Converting to one archive file: hash the source file while its tensors are copied.
    with deferring_source_digests(target == "archive", algorithm) as pending:
        src = open_source(source, **options)
    try:
        source_file = source if isinstance(source, (str, os.PathLike)) else None
        with _source_runner_started(src, target, verify):
            return _convert_opened(src, destination, target, pick(pending, src.archive),
                                   verify=verify, seed=seed, samples=samples, atol=atol, rtol=rtol,
                                   max_shard_size=max_shard_size, source_file=source_file,
                                   overwrite=overwrite, digest=algorithm, progress=progress,
                                   keep_int8=keep_int8, nested=nested)
    finally:
        for digest in pending:
            digest.cancel()


def _convert_to_url(source: Any, url: str, *, overwrite: bool, **kwargs: Any) -> ConversionResult:
    """``convert`` to a URL of object storage: made (and verified) whole in a private local
    folder under the same name, then uploaded, the index of a sharded set last.
    """
    import shutil

    from weightio.errors import TargetExistsError

    target_for(remote.basename(url), kwargs.get("to"))  # a bad target fails before any read
    if not overwrite and remote.exists(url):
        raise TargetExistsError("already exists and overwrite=False; remove it or allow "
                                "overwriting", file=url)
    folder = remote.private_folder("upload")
    try:
        result = convert(source, folder / (remote.basename(url) or "model"), **kwargs)
        written = Path(result.destination)
        parent = url.rsplit("/", 1)[0]
        for item in [*sorted(p for p in folder.iterdir() if p != written), written]:
            remote.upload(item, f"{parent}/{item.name}")
        result.destination = f"{parent}/{written.name}"
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _source_runner_started(src: Any, target: TargetName, verify: bool) -> Iterator[None]:
    """Start a source that runs in a process of its own (a Keras file) now, and close it after.

    It imports its framework while this process builds the target in another, so the proof
    waits for the slower of the two. Not for a framework-free target (nothing to overlap, the
    process costs ~0.3 s) nor one of the source's framework (that would import it twice).
    """
    start = getattr(src.runner, "start", None)
    builder = target_named(target).framework
    if (verify and start is not None and not src.archive.spec.weights_only
            and builder not in ("weightio", src.framework)):
        start()
    try:
        yield
    finally:
        close = getattr(src.runner, "close", None)
        if close is not None:
            close()


def _convert_opened(
    src: Any,
    destination: Path,
    target: TargetName,
    source_digest: Any,
    *,
    verify: bool,
    seed: int,
    samples: int,
    atol: float | None,
    rtol: float | None,
    max_shard_size: int | str | None,
    source_file: os.PathLike[str] | str | None,
    overwrite: bool,
    digest: str | None,
    progress: bool,
    keep_int8: bool = False,
    nested: bool | None = None,
) -> ConversionResult:
    archive = src.archive
    try:
        native, runner = _build_target(archive, target, seed=seed, keep_int8=keep_int8,
                                       nested=nested)
    except WeightioError as exc:  # name the source file the unbuildable layer came from
        if source_file is not None:
            raise exc.with_file(source_file) from exc
        raise

    nonfinite: list[NonFinite] = []
    if archive.spec.weights_only:
        record = unverified(archive, target=target, seed=seed, reason=(
            "the source holds weights only (no architecture), so there is no model to run"
        ))
    elif not verify:
        record = unverified(archive, target=target, seed=seed,
                            reason="verification was skipped (verify=False, --no-verify)")
    else:
        record = verify_conversion(
            archive,
            target=target,
            source_name=src.framework,
            source_runner=src.runner,
            target_runner=runner,
            seed=seed,
            samples=samples,
            atol=atol,
            rtol=rtol,
            source_not_run=src.not_run,
        )
        nonfinite = scan_nonfinite(archive)
        if any(not check.passed for check in record.checks):
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
    from contextlib import ExitStack

    from weightio.progress import byte_progress, reporting

    with ExitStack() as stack:
        if progress:  # else a caller's own reporting block (if any) stays in charge
            total = archive_bytes(archive) if target == "archive" else 0
            stack.enter_context(reporting(stack.enter_context(
                byte_progress("write", total, enabled=True))))
        written = _write(archive, native, target, destination, seed=seed,
                         max_shard_size=max_shard_size, source_digest=source_digest,
                         overwrite=overwrite, digest=digest)
    return ConversionResult(written, target, archive, record, nonfinite)


def archive_bytes(archive: Archive) -> int:
    """The bytes of tensor data an archive write copies."""
    import math

    from weightio.spec.dtypes import itemsize

    return sum(math.prod(ref.shape) * itemsize(ref.dtype) for _, _, ref in archive.spec.stored_refs())


def _build_target(
    archive: Archive, target: TargetName, *, seed: int = 0, keep_int8: bool = False,
    nested: bool | None = None,
) -> tuple[Any, Any]:
    """Build the native target model and a runner for it (None where it cannot run here).

    A torch builder gets the archive encoded: it builds weight-norm weights as torch's
    parametrization and, with ``keep_int8`` (torch targets only, checked by ``convert``),
    int8 weights as int8 modules, and decodes the rest.
    """
    row = target_named(target)
    if archive.spec.weights_only:
        if row.weights_only:
            return None, None  # a state dict or archive needs no architecture
        raise WeightsOnlyArchiveError(
            "this source holds weights only (a bare state dict) with no architecture, so no "
            f"{target} model can be built; convert it to .safetensors or .pt, or copy it into "
            "a model with weightio.load_into",
        )
    if row.framework == "torch":  # to_torch decodes what it does not build encoded
        return row.build(archive, seed=seed, keep_int8=keep_int8)
    if target == "keras":  # how nested models are written (checked by ``convert``)
        return row.build(plain(archive), seed=seed, nested=nested)
    return row.build(plain(archive), seed=seed)  # an encoded (quantised) parameter is built decoded


def _write(
    archive: Archive,
    native: Any,
    target: TargetName,
    destination: Path,
    *,
    seed: int,
    max_shard_size: int | str | None = None,
    source_digest: Any = None,
    overwrite: bool = True,
    digest: str | None = None,
) -> Path:
    archive = archive if target == "archive" else plain(archive)  # an archive keeps encodings
    return target_named(target).write(
        archive, native, destination, seed=seed, max_shard_size=max_shard_size,
        source_digest=source_digest, overwrite=overwrite, digest=digest,
    )
