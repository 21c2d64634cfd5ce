"""The ``weightio`` command: thin verbs over the public API.

Each verb parses, calls the API, renders. Every expected failure is a ``WeightioError`` and
becomes one line on stderr and the error's exit code (1 a check failed, 2 bad usage or input),
never a traceback. Everything printed goes through ``_echo``/``_echo_json``, which escape what a
file could smuggle into a terminal (``weightio.terminal``): names are shown, never obeyed.
Heavy modules (pydantic, numpy, frameworks) are imported inside the verbs, so
``weightio --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from weightio.terminal import json_text, printable, printable_lines
from weightio.version import __version__

app = typer.Typer(
    name="weightio",
    help=(
        "Move model weights between Keras, PyTorch and a neutral safetensors archive, "
        "and prove the result computes the same numbers."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])

_TRUST_PICKLE_HELP = (
    "Allow unpickling a file you trust (runs its code): .pkl/.joblib, or a whole-module "
    "torch.save(model)."
)

# Options of every verb that reads a source, spelled the same everywhere.
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="Entry of a training checkpoint holding the state dict (default: its only one).",
    ),
]
ArchitectureOption = Annotated[
    Path | None,
    typer.Option(
        "--architecture", help="For a .weights.h5 source: the model's .keras file or config.json."
    ),
]
TrustPickleOption = Annotated[bool, typer.Option("--trust-pickle", help=_TRUST_PICKLE_HELP)]
LayoutOption = Annotated[
    str,
    typer.Option(
        "--layout",
        help="Feature maps of --input (and outputs): source (the source framework's, "
        "channels-last for Keras; default), canonical (channels-first), channels_last, "
        "channels_first.",
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option("--scheduler", metavar="ADDRESS",
                 help="Run on this Dask scheduler (tcp://host:8786); default: a LocalCluster of "
                 "worker processes on 127.0.0.1."),
]
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", metavar="N",
                 help="Worker processes of the local cluster (default: one per core)."),
]
_DIGEST_HELP = "Digest recorded for every tensor of an archive: blake3 (default, fast) or sha256."


def _echo(text: str, *, err: bool = False, nl: bool = True) -> None:
    """Print text whose names may come from a file: each line made printable."""
    typer.echo(printable_lines(text), err=err, nl=nl)


def _echo_json(text: str) -> None:
    """Print JSON for machines, its strings' control and bidi characters as JSON escapes."""
    typer.echo(json_text(text))


#: Keyword arguments of the Python API that are options of the CLI, as the CLI spells them.
_CLI_FLAGS = {
    "key": "--key", "architecture": "--architecture", "trust_pickle": "--trust-pickle",
    "overwrite": "--overwrite", "verify": "--verify", "samples": "--samples", "seed": "--seed",
    "atol": "--atol", "rtol": "--rtol", "head": "--head", "max_shard_size": "--max-shard-size",
    "digest": "--digest", "older_than": "--older-than", "layout": "--layout",
    "max_change": "--max-change", "sparsity": "--sparsity", "scope": "--scope", "norm": "--norm",
    "top": "--top",
}
_NAMED = re.compile(r"\b(" + "|".join(_CLI_FLAGS) + r") must\b")  # "samples must be …"
_KEYWORD = re.compile(r"\b(" + "|".join(_CLI_FLAGS) + r")=(True|False|[^\s,;:)]*?)(?=\.?(?:[\s,;:)]|$))")


def cli_words(message: str) -> str:
    """A message of the Python API in the CLI's words: ``key=`` becomes ``--key``,
    ``overwrite=False`` ``--no-overwrite``, ``samples=0`` ``--samples 0``; a ``(CLI: …)``
    aside, written for Python users, is dropped as the CLI spelling is now the text.
    """
    message = re.sub(r" \(CLI: [^)]*\)", "", message)

    def flag(match: re.Match[str]) -> str:
        name, value = _CLI_FLAGS[match.group(1)], match.group(2)
        if value == "True":
            return name
        if value == "False":
            return "--no-" + name[2:]
        value = value.strip("'\"")
        return f"{name} {value}" if value else name

    message = _NAMED.sub(lambda match: _CLI_FLAGS[match.group(1)] + " must", message)
    return _KEYWORD.sub(flag, message)


def _fail(message: str, code: int) -> typer.Exit:
    # one line, whatever the message holds, in the CLI's own words
    typer.echo(f"error: {printable(cli_words(message))}", err=True)
    return typer.Exit(code)


def handles_errors(fn: F) -> F:
    """Turn weightio errors into one stderr line and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from weightio.errors import WeightioError

        try:
            return fn(*args, **kwargs)
        except WeightioError as exc:
            raise _fail(str(exc), exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"weightio {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Move model weights between frameworks through one verified, neutral archive."""


@app.command()
@handles_errors
def convert(
    source: Annotated[str, typer.Argument(help="Model file: .keras, .h5, .pt, .safetensors … (or a URL)")],
    destination: Annotated[
        str,
        typer.Argument(
            help="Output: .safetensors (archive), .keras, .pt2, .pt, .skops or .joblib"
        ),
    ],
    to: Annotated[
        str | None,
        typer.Option(
            help="Target when the extension does not say: archive, keras, pt2, pt, skops, joblib."
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Compare outputs before writing.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the probe inputs.")] = 0,
    samples: Annotated[int, typer.Option(help="Batch size of the probe.")] = 8,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance (default by dtype).")] = None,
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance (default by dtype).")] = None,
    key: KeyOption = None,
    head: Annotated[
        str | None,
        typer.Option(help="scikit-learn classifiers: predict_proba (default) or decision_function."),
    ] = None,
    trust_pickle: TrustPickleOption = False,
    architecture: ArchitectureOption = None,
    max_shard_size: Annotated[
        str | None,
        typer.Option(
            "--max-shard-size",
            help="Split an archive into shards of at most this size (e.g. 2GB, 500MiB) plus "
            "NAME.safetensors.index.json.",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite/--no-overwrite", help="Replace an existing DESTINATION (default)."),
    ] = True,
    digest: Annotated[str | None, typer.Option("--digest", help=_DIGEST_HELP)] = None,
    keep_int8: Annotated[
        bool,
        typer.Option(
            "--keep-int8",
            help=".pt2/.pt: keep int8-quantised conv/dense weights int8 in the module "
            "(QuantizedLinear/QuantizedConv, decoded in forward; ~4x smaller); other encoded "
            "layers are dequantised, with a warning naming them.",
        ),
    ] = False,
    nested: Annotated[
        bool | None,
        typer.Option(
            "--nested/--flat",
            help=".keras: write a nested model's layers (outer/inner names) as nested models "
            "(--nested: refuse if a group is not a clean sub-graph) or flat (--flat); default: "
            "nested where clean, else flat with a warning. Nesting needs Keras installed.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Convert SOURCE into DESTINATION, verifying that both compute the same outputs."""
    from weightio.verbs.convert import convert as do_convert

    _hand_over_early_witness()
    options = _source_options(key, architecture, trust_pickle, head)
    result = do_convert(
        source, destination, to=to, verify=verify, seed=seed, samples=samples,
        atol=atol, rtol=rtol, max_shard_size=max_shard_size, overwrite=overwrite, digest=digest,
        progress=True, keep_int8=keep_int8, nested=nested, **options,
    )
    _note_picked_key(result.archive, options)
    if as_json:
        _echo_json(result.to_json())
        return
    for line in result.summary():
        _echo(line)


def _source_options(
    key: str | None, architecture: Path | None, trust_pickle: bool, head: str | None = None
) -> dict[str, Any]:
    """Reader options, only those given (a reader refuses options that do not apply to it)."""
    options: dict[str, Any] = {}
    if key is not None:
        options["key"] = key
    if architecture is not None:
        options["architecture"] = architecture
    if head is not None:
        options["head"] = head
    if trust_pickle:
        options["trust_pickle"] = True
    return options


def _read(source: Path, options: dict[str, Any]) -> Any:
    """``weightio.read`` with the verb's source options, saying which checkpoint entry it took."""
    from weightio.verbs.read import read

    archive = read(source, **options)
    _note_picked_key(archive, options)
    return archive


def _note_picked_key(archive: Any, options: dict[str, Any]) -> None:
    picked = archive.spec.provenance.source_key
    if picked is not None and "key" not in options:
        _echo(f"note: read the state dict under {picked!r}, the checkpoint's only one "
              "(--key picks another entry)", err=True)


@app.command()
@handles_errors
def inspect(
    source: Annotated[str, typer.Argument(help="Archive or any model file weightio reads (or a URL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    trust_pickle: TrustPickleOption = False,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    stats: Annotated[
        bool,
        typer.Option("--stats", help="Read every tensor for mean, std, min, max, L2, zeros, NaN/Inf."),
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Write a self-contained HTML report (stats, table, plots)."),
    ] = None,
    native: Annotated[
        bool,
        typer.Option("--native", help="Parameters in the source framework's names and shapes "
                     "(Keras kernel [in, out]; PyTorch state-dict keys)."),
    ] = False,
) -> None:
    """Show the layers of SOURCE: kind, parameter shapes, dtypes and counts (header only)."""
    from weightio.analysis.inspect import inspect_archive
    from weightio.format.single import open_archive_file

    if native and (stats or html is not None):
        raise typer.BadParameter(
            "--native shows names and shapes only; --stats and --html are of weightio's "
            "canonical tensors: run them without --native", param_hint="--native")
    # header only: a weightio archive file opens without numpy or the table of every reader
    options = _source_options(key, architecture, trust_pickle)
    archive = open_archive_file(source) if not (stats or html or options) else None
    if archive is None:
        archive = _read(source, options)
    if native:
        from weightio.verbs.inspect import inspect as inspect_source

        report = inspect_source(archive, native=True)
    else:
        report = inspect_archive(archive, stats=stats or html is not None, progress=True)
    if html is not None:
        from weightio.report.html import inspect_page, write_html

        write_html(inspect_page(report, archive), html)
        _echo(f"wrote {html}", err=True)
    if as_json:
        _echo_json(report.model_dump_json(indent=2))
        return
    from weightio.report.text import console, print_inspection

    print_inspection(report, console())


@app.command("diff")
@handles_errors
def diff_verb(
    a: Annotated[str, typer.Argument(help="The reference checkpoint (any file weightio reads, or a URL).")],
    b: Annotated[str, typer.Argument(help="The checkpoint compared with it.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the documented JSON shape.")] = False,
    atol: Annotated[float, typer.Option(help="Unchanged when |B - A| <= atol + rtol * |A|.")] = 0.0,
    rtol: Annotated[float, typer.Option(help="Relative tolerance (see --atol).")] = 0.0,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a bar chart of relative change per layer into this folder.")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report.")] = None,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    trust_pickle: TrustPickleOption = False,
    step_from: Annotated[
        str | None,
        typer.Option("--step-from", metavar="KEY",
                     help="Two run folders: take steps from this checkpoint entry (default: file names)."),
    ] = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Compare A and B layer by layer; exit 0 if identical within tolerance, 1 if they differ.

    --key, --architecture and --trust-pickle apply to each of A and B that is not an archive.
    Two folders of checkpoints (runs, not model folders) are compared step by step, paired by
    step, on a Dask cluster (--scheduler; a local one by default).
    """
    if _are_runs(a, b):
        _diff_runs(a, b, as_json=as_json, step_from=step_from, scheduler=scheduler,
                   options=_source_options(key, architecture, trust_pickle))
    from weightio.verbs.diff import diff as do_diff

    report = do_diff(a, b, atol=atol, rtol=rtol, progress=True,
                     **_source_options(key, architecture, trust_pickle))
    if plot is not None:
        from weightio.report.plots import diff_relative_change, write_pngs

        png = diff_relative_change(report)
        for path in write_pngs([("diff-relative-change.png", png)] if png else [], plot):
            _echo(f"wrote {path}", err=True)
    if html is not None:
        from weightio.report.html import diff_page, write_html

        write_html(diff_page(report), html)
        _echo(f"wrote {html}", err=True)
    if as_json:
        _echo_json(report.to_json())
    else:
        from weightio.report.text import console, print_diff

        print_diff(report, console())
    raise typer.Exit(0 if report.identical else 1)


@app.command()
@handles_errors
def explain(
    source: Annotated[Path, typer.Argument(help="Archive or model file (with an architecture).")],
    input_value: Annotated[
        str,
        typer.Option("--input", help="A .npy file, or values: '10', '1,2,3', '[[1, 2, 3]]'."),
    ],
    sample: Annotated[int, typer.Option(help="Which sample of a batch to explain.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    layout: LayoutOption = "source",
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    trust_pickle: TrustPickleOption = False,
) -> None:
    """Write out the forward pass of one input, layer by layer, ending in the model's output."""
    from weightio.analysis.explain import parse_input
    from weightio.verbs.explain import explain as do_explain

    archive = _read(source, _source_options(key, architecture, trust_pickle))
    explanation = do_explain(archive, parse_input(input_value, archive.spec), sample=sample,
                             layout=layout)
    if as_json:
        _echo_json(explanation.model_dump_json(indent=2))
    else:
        _echo(explanation.to_text(), nl=False)


@app.command()
@handles_errors
def plot(
    source: Annotated[Path, typer.Argument(help="Archive or any model file weightio reads.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNG files (created if needed).")],
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    trust_pickle: TrustPickleOption = False,
) -> None:
    """Draw PNGs: weight histograms per layer, conv filter grids, layer norms, input importance."""
    from weightio.report.plots import archive_pngs, write_pngs

    archive = _read(source, _source_options(key, architecture, trust_pickle))
    for path in write_pngs(archive_pngs(archive, progress=True), out):
        _echo(f"wrote {path}")


@app.command()
@handles_errors
def run(
    source: Annotated[Path, typer.Argument(help="Archive or model file.")],
    input_path: Annotated[
        Path, typer.Option("--input", help=".npy file with a batch of inputs (no pickles).")
    ],
    output: Annotated[Path | None, typer.Option(help="Write the output to this .npy file.")] = None,
    trust_pickle: TrustPickleOption = False,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    layout: LayoutOption = "source",
) -> None:
    """Compute the model's output for --input with the numpy reference runtime.

    --input is in the source framework's layout (a Keras CNN takes channels-last .npy files).
    """
    import numpy as np

    from weightio.errors import InvalidInputError
    from weightio.format.atomic import atomic_write
    from weightio.format.paths import open_regular
    from weightio.runtime.forward import run as run_model

    try:
        with open_regular(input_path) as handle:  # never blocks on a FIFO or reads a device
            x = np.load(handle, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read the input as a .npy array ({exc})", file=input_path) from None
    archive = _read(source, _source_options(key, architecture, trust_pickle))
    result = run_model(archive, x, layout=layout)
    outputs = result if isinstance(result, list) else [result]
    if output is not None:
        with atomic_write(output) as handle:
            np.save(handle, outputs[0], allow_pickle=False)
        _echo(f"wrote {output}")
    else:
        for out in outputs:
            _echo(np.array2string(out, threshold=200))


@app.command()
@handles_errors
def verify(
    archive: Annotated[str, typer.Argument(help="A weightio .safetensors archive (or its URL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Check every tensor of ARCHIVE against the digest (BLAKE3 or sha256) recorded when written."""
    from weightio.verbs.write import verify as do_verify

    loaded = do_verify(archive, progress=True)
    count = len(loaded.stored)  # a quantised parameter's scale and zero point are checked too
    algorithms = "/".join(loaded.digest_algorithms()) or "recorded"
    if as_json:
        _echo_json(json.dumps({
            "archive": str(archive), "ok": True, "tensors": count,
            "digests": loaded.digest_algorithms(),
            "verification": [r.model_dump(mode="json") for r in loaded.spec.verification],
        }, indent=2))
        return
    _echo(f"ok: {count} tensor(s) in {archive} match their recorded {algorithms} digest")
    for record in loaded.spec.verification:
        _echo(_proof_line(record))


def _proof_line(record: Any) -> str:
    """One line for a recorded proof, never claiming more than it checked."""
    if record.status == "not verified" or not record.checks:
        return f"recorded proof: {record.target} not verified: {record.note or 'nothing was compared'}"
    worst = max(c.worst_abs for c in record.checks)
    pairs = ", ".join(sorted({" vs ".join(c.witnesses) for c in record.checks}))
    line = (
        f"recorded proof: {record.target} checked on {record.samples} seeded samples "
        f"(seed {record.seed}; {pairs}), worst abs diff {worst:.3g}, "
        f"{'passed' if record.passed else 'FAILED'}"
    )
    return f"{line}; partial: {record.note}" if record.status == "partial" else line


@app.command("cast")
@handles_errors
def cast_verb(
    source: Annotated[Path, typer.Argument(help="Archive or any model file weightio reads.")],
    destination: Annotated[Path, typer.Argument(help="Output archive (.safetensors).")],
    dtype: Annotated[str, typer.Option("--dtype", help="float16, bfloat16, float32 or float64.")],
    layer: Annotated[
        list[str] | None, typer.Option("--layer", help="Cast only this layer (repeatable).")
    ] = None,
    trust_pickle: TrustPickleOption = False,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    digest: Annotated[str | None, typer.Option("--digest", help=_DIGEST_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Cast the float weights of SOURCE to --dtype and write DESTINATION; refuse any overflow.

    Integer tensors are left as they are; values that underflow to zero and NaN/Inf already in
    the weights are counted and reported. The old verification record is dropped.
    """
    from weightio.format.hashing import check_algorithm
    from weightio.format.store import save
    from weightio.verbs.cast import cast, cast_dtype_name

    cast_dtype_name(dtype)  # a typo in --dtype fails before anything is read
    check_algorithm(digest)
    if destination.suffix.lower() != ".safetensors":
        from weightio.errors import UnsupportedSourceError

        raise UnsupportedSourceError(
            "cast writes a weightio archive; name it .safetensors (then `weightio convert` it)",
            file=destination,
        )
    result = cast(source, dtype, layers=layer, **_source_options(key, architecture, trust_pickle))
    save(result.archive, destination, digest=digest)
    if as_json:
        _echo_json(json.dumps({"destination": str(destination), **json.loads(result.to_json())},
                              indent=2))
        return
    for line in result.summary():
        _echo(line)
    _echo(f"wrote {destination}")


# -- transforms (issue 17): fold, prune, quantize, importance; each one measured -----------------

MaxChangeOption = Annotated[
    float | None,
    typer.Option("--max-change", metavar="X",
                 help="Refuse, writing nothing, when the outputs move more than X (worst change "
                 "relative to the output's scale, on the seeded probes)."),
]
ProbeSeedOption = Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the probe inputs.")]
ProbeSamplesOption = Annotated[int, typer.Option("--samples", metavar="N", help="Batch size of the probe.")]


def _transform_destination(destination: Path, verb: str, digest: str | None) -> None:
    """Refuse a destination that is not an archive, or a bad --digest, before any work."""
    from weightio.format.hashing import check_algorithm

    check_algorithm(digest)
    if destination.suffix.lower() != ".safetensors":
        from weightio.errors import UnsupportedSourceError

        raise UnsupportedSourceError(
            f"{verb} writes a weightio archive; name it .safetensors (then `weightio convert` it)",
            file=destination,
        )


def _write_transform(result: Any, destination: Path, digest: str | None, as_json: bool) -> None:
    """Save the transformed archive, then say what changed and what it cost."""
    from weightio.format.store import save

    save(result.archive, destination, digest=digest)
    if as_json:
        _echo_json(json.dumps({"destination": str(destination), **result.to_dict()}, indent=2))
        return
    for line in result.summary():
        _echo(line)
    _echo(f"wrote {destination}")


@app.command("fold")
@handles_errors
def fold_verb(
    source: Annotated[Path, typer.Argument(help="Archive or any model file weightio reads.")],
    destination: Annotated[Path, typer.Argument(help="Output archive (.safetensors).")],
    to: Annotated[
        str, typer.Option("--to", metavar="FORM",
                          help="plain (default): the folds above; weight-norm: the reverse, dense/conv "
                          "weights stored as g and v (torch's weight_norm, dim=0), built by the torch "
                          "writer with parametrizations.weight_norm.")
    ] = "plain",
    include: Annotated[
        list[str] | None, typer.Option("--include", metavar="LAYER",
                                       help="--to weight-norm: only these layers: a name, a glob or a kind "
                                       "(repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", metavar="LAYER",
                                       help="--to weight-norm: not these layers (repeatable).")
    ] = None,
    seed: ProbeSeedOption = 0,
    samples: ProbeSamplesOption = 8,
    max_change: MaxChangeOption = None,
    trust_pickle: TrustPickleOption = False,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    digest: Annotated[str | None, typer.Option("--digest", help=_DIGEST_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Fold batch norm into the conv/dense before it, drop dropout/identity layers, and make
    torch weight norm plain weights (or, --to weight-norm, put dense/conv weights in weight-norm
    form); write DESTINATION and say how far the outputs moved.
    """
    from weightio.errors import InvalidInputError
    from weightio.transforms.measure import check_measure_options
    from weightio.verbs.transform import fold, weight_norm

    if to not in ("plain", "weight-norm"):
        raise InvalidInputError(f"--to must be plain or weight-norm. Received: --to {to!r}")
    if to == "plain" and (include or exclude):
        raise InvalidInputError("--include/--exclude choose the layers of --to weight-norm; "
                                "fold (--to plain) folds every layer it can")
    check_measure_options(seed, samples, max_change)
    _transform_destination(destination, "fold", digest)
    options = _source_options(key, architecture, trust_pickle)
    if to == "weight-norm":
        result = weight_norm(source, include=include, exclude=exclude, seed=seed, samples=samples,
                             max_change=max_change, **options)
    else:
        result = fold(source, seed=seed, samples=samples, max_change=max_change, **options)
    _write_transform(result, destination, digest, as_json)


def _prune_rows(result: Any) -> list[str]:
    """One line per pruned layer: sparsity, parameters (and units) before and after."""
    lines = []
    for row in result.layers:
        units = (f", units {row['units_before']} -> {row['units_after']}" if "units_before" in row else "")
        lines.append(f"  {row['layer']} ({row['kind']}): sparsity {row['sparsity']:.1%}, parameters "
                     f"{row['parameters_before']:,} -> {row['parameters_after']:,}{units}")
    return lines


@app.command("prune")
@handles_errors
def prune_verb(
    source: Annotated[Path, typer.Argument(help="Archive or any model file weightio reads.")],
    destination: Annotated[Path, typer.Argument(help="Output archive (.safetensors).")],
    sparsity: Annotated[
        float, typer.Option("--sparsity", metavar="X",
                            help="Share to remove, from 0 to below 1: of the weights, or of each layer's "
                            "filters/units with --structured.")
    ],
    structured: Annotated[
        bool, typer.Option("--structured", help="Remove whole conv filters / dense units (a smaller model).")
    ] = False,
    scope: Annotated[
        str, typer.Option("--scope", metavar="SCOPE", help="Unstructured: layer (default) or global.")
    ] = "layer",
    norm: Annotated[str, typer.Option("--norm", metavar="NORM", help="Structured: rank by l1 (default) or l2.")] = "l1",
    include: Annotated[
        list[str] | None, typer.Option("--include", metavar="LAYER",
                                       help="Prune only these layers: a name, a glob or a kind (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", metavar="LAYER",
                                       help="Leave these layers: a name, a glob or a kind (repeatable).")
    ] = None,
    seed: ProbeSeedOption = 0,
    samples: ProbeSamplesOption = 8,
    max_change: MaxChangeOption = None,
    trust_pickle: TrustPickleOption = False,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    digest: Annotated[str | None, typer.Option("--digest", help=_DIGEST_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Prune SOURCE's weights by magnitude (or whole filters with --structured) to --sparsity;
    write DESTINATION and report each layer and how far the outputs moved.
    """
    from weightio.transforms.measure import check_measure_options
    from weightio.transforms.prune import check_prune_options
    from weightio.verbs.transform import prune

    check_prune_options(sparsity, scope, norm, structured)
    check_measure_options(seed, samples, max_change)
    _transform_destination(destination, "prune", digest)
    result = prune(source, sparsity, structured=structured, scope=scope, norm=norm, include=include,
                   exclude=exclude, seed=seed, samples=samples, max_change=max_change,
                   **_source_options(key, architecture, trust_pickle))
    if not as_json:
        result.notes[1:1] = _prune_rows(result)
    _write_transform(result, destination, digest, as_json)


@app.command("quantize")
@handles_errors
def quantize_verb(
    source: Annotated[Path, typer.Argument(help="Archive or any model file weightio reads.")],
    destination: Annotated[Path, typer.Argument(help="Output archive (.safetensors).")],
    dtype: Annotated[
        str, typer.Option("--dtype", metavar="DTYPE", help="int8 (default), float8_e4m3 or float8_e5m2.")
    ] = "int8",
    asymmetric: Annotated[
        bool, typer.Option("--asymmetric", help="int8 with a zero point (default: symmetric, none).")
    ] = False,
    per_tensor: Annotated[
        bool, typer.Option("--per-tensor", help="One scale per tensor (default: one per output channel).")
    ] = False,
    include: Annotated[
        list[str] | None, typer.Option("--include", metavar="LAYER",
                                       help="Quantise only these layers: a name, a glob or a kind (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", metavar="LAYER",
                                       help="Leave these layers float: a name, a glob or a kind (repeatable).")
    ] = None,
    seed: ProbeSeedOption = 0,
    samples: ProbeSamplesOption = 8,
    max_change: MaxChangeOption = None,
    trust_pickle: TrustPickleOption = False,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    digest: Annotated[str | None, typer.Option("--digest", help=_DIGEST_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Store SOURCE's conv/dense weights in 8 bits (integers + scale + zero point, format 1.2);
    write DESTINATION and report the size before and after and how far the outputs moved.
    """
    from weightio.transforms.measure import check_measure_options
    from weightio.transforms.quantize import check_quantize_options
    from weightio.verbs.transform import quantize

    check_quantize_options(dtype, not asymmetric)
    check_measure_options(seed, samples, max_change)
    _transform_destination(destination, "quantize", digest)
    result = quantize(source, dtype, symmetric=not asymmetric, per_channel=not per_tensor,
                      include=include, exclude=exclude, seed=seed, samples=samples,
                      max_change=max_change, **_source_options(key, architecture, trust_pickle))
    _write_transform(result, destination, digest, as_json)


@app.command("importance")
@handles_errors
def importance_verb(
    source: Annotated[Path, typer.Argument(help="Archive or any model file weightio reads.")],
    top: Annotated[int, typer.Option("--top", metavar="N", help="Rows of the ranked table (default 20).")] = 20,
    plot: Annotated[
        Path | None, typer.Option("--plot", metavar="DIR",
                                  help="Write importance.png (a heat map for image inputs) into this folder.")
    ] = None,
    gradients: Annotated[
        bool, typer.Option("--gradients",
                           help="Rank every input element by the mean |df/dx| over seeded probe inputs "
                           "instead (f: the top-class value of the first output, or the sum of its "
                           "values), by central differences through the runtime in float64.")
    ] = False,
    seed: ProbeSeedOption = 0,
    samples: ProbeSamplesOption = 8,
    trust_pickle: TrustPickleOption = False,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Rank the inputs of SOURCE's first dense/conv layer by the share of its absolute weights
    they meet (per feature, pixel or input channel), or, with --gradients, every input element
    by the probe-input gradients of the output.
    """
    from weightio.options import check_count
    from weightio.verbs.transform import importance

    check_count("top", top)
    found = importance(source, gradients=gradients, seed=seed, samples=samples,
                       **_source_options(key, architecture, trust_pickle))
    if plot is not None:
        from weightio.report.plots import importance_png, write_pngs

        for path in write_pngs([("importance.png", importance_png(found))], plot):
            _echo(f"wrote {path}", err=True)
    if as_json:
        _echo_json(json.dumps(found.to_dict(top), indent=2))
        return
    for line in found.table(top):
        _echo(line)


# -- end of transforms ----------------------------------------------------------------------------


@app.command()
@handles_errors
def clean(
    folders: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders to search (default: the current folder)."),
    ] = None,
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            help="Only temp files not modified for this many seconds (default 60, so a write "
            "still in progress keeps its own).",
        ),
    ] = 60.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go; remove nothing.")
    ] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="Also search sub-folders (never through symlinks).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Remove temp files (.NAME.weightio-tmp-*) that killed weightio writes left behind."""
    from weightio.format.cleanup import clean_stale_temps

    verb = "would remove" if dry_run else "removed"
    found = clean_stale_temps(
        folders or [Path(".")], older_than=older_than, dry_run=dry_run, recursive=recursive,
        on_remove=None if as_json else lambda path: _echo(f"{verb} {path}"),
    )
    if as_json:
        _echo_json(json.dumps({"dry_run": dry_run, "removed": [str(p) for p in found]}, indent=2))
        return
    if not found:
        _echo("no stale weightio temp files found")
    else:
        _echo(f"{verb} {len(found)} stale temp file(s)")


@app.command()
@handles_errors
def schema(
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of the archive's model spec."""
    from weightio.spec import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        from weightio.format.atomic import atomic_write

        with atomic_write(out) as handle:
            handle.write(text.encode())
        _echo(f"wrote {out}", err=True)


# -- many checkpoints at once, on a Dask cluster (weightio.batch; docs/scale.md) -------------

batch_app = typer.Typer(
    help="Many checkpoints at once, on a Dask cluster (a local one by default).",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")



@batch_app.command("convert")
@handles_errors
def batch_convert(
    sources: Annotated[
        list[str], typer.Argument(metavar="SOURCES",
                                  help="Checkpoints: files, folders, globs or URLs (s3://…).")
    ],
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="Folder (or URL) for the archives.")],
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    resume: Annotated[
        bool,
        typer.Option("--resume/--no-resume",
                     help="Skip archives whose recorded source digest matches (default)."),
    ] = True,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Compare outputs before writing.")
    ] = True,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the probe inputs.")] = 0,
    samples: Annotated[int, typer.Option(metavar="N", help="Batch size of the probe.")] = 8,
    key: KeyOption = None,
    architecture: ArchitectureOption = None,
    trust_pickle: TrustPickleOption = False,
    digest: Annotated[str | None, typer.Option("--digest", metavar="ALGORITHM", help=_DIGEST_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Convert every checkpoint SOURCES names into an archive in --out, one Dask task per file.

    A file that fails is reported with its error and the others go on; exit 1 if any failed.
    """
    from weightio.batch.conversion import convert as convert_batch
    from weightio.batch.render import print_batch, result_line

    report = convert_batch(
        sources, out, scheduler=scheduler, workers=workers, resume=resume, digest=digest,
        verify=verify, seed=seed, samples=samples,
        on_result=None if as_json else (lambda result: _echo(result_line(result), err=True)),
        **_source_options(key, architecture, trust_pickle),
    )
    if as_json:
        _echo_json(report.to_json())
    else:
        from weightio.report.text import console

        print_batch(report, console())
    raise typer.Exit(0 if report.ok else 1)


@app.command("track")
@handles_errors
def track_verb(
    sources: Annotated[
        list[str], typer.Argument(metavar="SOURCES",
                                  help="A run's checkpoints: files, folders, globs or URLs.")
    ],
    step_from: Annotated[
        str | None,
        typer.Option("--step-from", metavar="KEY",
                     help="Take each step from this checkpoint entry (default: the file name's last number)."),
    ] = None,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    stopped_rtol: Annotated[
        float, typer.Option("--stopped-rtol", metavar="X",
                            help="A layer whose update is at most X of its norm is unchanged.")
    ] = 1e-7,
    html: Annotated[
        Path | None, typer.Option("--html", metavar="FILE", help="Write an HTML report (one curve per layer).")
    ] = None,
    key: KeyOption = None,
    trust_pickle: TrustPickleOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Follow each layer through a run: change from the first and the previous checkpoint,
    update norm over weight norm, layers that stopped, units whose weights went to zero.
    """
    from weightio.batch.tracking import track

    report = track(sources, step_from=step_from, scheduler=scheduler, workers=workers,
                   stopped_rtol=stopped_rtol, **_source_options(key, None, trust_pickle))
    if html is not None:
        from weightio.batch.page import track_page
        from weightio.report.html import write_html

        write_html(track_page(report), html)
        _echo(f"wrote {html}", err=True)
    for failure in report.errors:
        _echo(f"left out {failure.source}: {failure.error.type}: {failure.error.message}", err=True)
    if as_json:
        _echo_json(report.to_json())
        return
    from weightio.batch.render import print_track
    from weightio.report.text import console

    print_track(report, console())


def _are_runs(a: str, b: str) -> bool:
    """Two folders that no reader claims as a model (a Hugging Face folder is one): two runs."""
    from weightio.format import remote

    if remote.is_remote(a) or remote.is_remote(b):
        return False
    a, b = Path(remote.as_local(a)), Path(remote.as_local(b))
    if not (a.is_dir() and b.is_dir()):
        return False
    from weightio.errors import UnsupportedSourceError
    from weightio.frameworks.table import file_source

    for folder in (a, b):
        try:
            file_source(folder)
        except UnsupportedSourceError:
            continue
        return False
    return True


def _diff_runs(a: str, b: str, *, as_json: bool, step_from: str | None, scheduler: str | None,
               options: dict[str, Any]) -> None:
    """``weightio diff RUN_A/ RUN_B/``: exit 0 if the runs are identical, 1 if they differ."""
    from weightio.batch.runs import diff_runs

    report = diff_runs(a, b, step_from=step_from, scheduler=scheduler, **options)
    if as_json:
        _echo_json(report.to_json())
    else:
        from weightio.batch.render import print_run_diff
        from weightio.report.text import console

        print_run_diff(report, console())
    raise typer.Exit(0 if report.identical else 1)


def main() -> None:
    """Entry point of the ``weightio`` script and ``python -m weightio``.

    Click's own usage errors (an unknown option, ``--seed abc``, a missing argument) become one
    line and exit 2 too, like every weightio error, instead of click's usage block.
    """
    _start_witness_early(sys.argv[1:])
    errors = _click_errors()
    command = typer.main.get_command(_app_for(sys.argv[1:]))
    _name_values(command)
    from weightio.cli_values import install

    install()  # plain values need no pydantic adapter at start-up
    try:
        code = command(standalone_mode=False)
    except errors.NoArgsIsHelpError as exc:
        exc.show()  # plain `weightio` or `weightio VERB`: the help is the answer
        raise SystemExit(exc.exit_code) from None
    except errors.UsageError as exc:
        where = f"see '{exc.ctx.command_path} --help'" if exc.ctx else "see 'weightio --help'"
        message = " ".join(exc.format_message().split())
        typer.echo(f"error: {printable(message)} ({where})", err=True)
        raise SystemExit(2) from None
    except errors.ClickException as exc:
        typer.echo(f"error: {printable(' '.join(exc.format_message().split()))}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


#: How long OpenBLAS's idle threads spin before sleeping, as log2 of CPU cycles (its default, 28,
#: is ~0.1 s at 2.5 GHz).
BLAS_THREAD_TIMEOUT = "16"


def quiet_blas_threads(environ: MutableMapping[str, str]) -> None:
    """Let OpenBLAS's worker threads sleep after ~26 µs idle instead of ~0.1 s (the CLI only;
    a value the user set wins).

    Merely importing numpy started OpenBLAS's pool, whose threads then spun for its default
    timeout: ~0.1 s of CPU on the other core of a 2-core machine in every verb that imports
    numpy (``python -c "import numpy"``: 0.19 s user against 0.09 s with this), taken from
    the digest and copy threads working there. Between BLAS calls the same spinning doubled
    the CPU of a loop of 400x400 matmuls and made it slower (0.32 s against 0.20 s). Set
    before numpy is imported, since OpenBLAS reads it when it loads.
    """
    environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT)


def entry() -> None:
    """Entry point of the ``weightio`` script and ``python -m weightio``: ``main``, then exit
    without tearing the interpreter down.

    The teardown after a verb has printed its answer (freeing every module, pydantic's schemas,
    numpy) cost ~60 ms of CPU per run, a fifth of ``weightio inspect``. Nothing of it is needed
    by the time ``main`` returns: every file is written, fsynced and renamed, and the output is
    flushed here. What a normal exit would still do is done first, in its order: non-daemon
    threads are joined and ``atexit`` handlers run (temporary folders, a Dask cluster, logging).
    An exception other than ``SystemExit`` (a bug) propagates as usual, with its traceback.
    """
    import atexit
    import os
    import threading

    quiet_blas_threads(os.environ)
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:  # pragma: no cover - main always raises SystemExit
        code = 0
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None or _observed():  # exit the ordinary way
        raise SystemExit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)  # what SystemExit("text") prints
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what the interpreter's exit reports too
            code = code or 120
    os._exit(code)


def _observed() -> bool:
    """True under a profiler, tracer or coverage (``python -m cProfile -m weightio``): they
    write their results after the program returns, so the ordinary exit must happen.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)  # Python >= 3.12 (coverage uses it there)
    if monitoring is not None:
        return any(monitoring.get_tool(tool) is not None for tool in range(6))
    return False


def _app_for(args: list[str]) -> typer.Typer:
    """``app`` with only the verb ``args`` names, when they start with one.

    typer builds every verb's parameters from its signature when it makes the command (~40 ms
    of the CPU of ``weightio inspect`` for fifteen verbs and a group): a run of one verb needs
    that verb only. Anything else (``--help``, ``--version``, no verb, a misspelt one) gets the
    whole app, so its help and its "No such command" are what they always were.
    """
    import copy

    if not args or args[0].startswith("-"):
        return app
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else "")
        if typer.main.get_command_name(name) == args[0]:
            single = copy.copy(app)
            single.registered_commands, single.registered_groups = [info], []
            return single
    for group in app.registered_groups:
        if group.name == args[0]:
            single = copy.copy(app)
            single.registered_commands, single.registered_groups = [], [group]
            return single
    return app

#: A Keras witness process ``main`` started before anything else (``_start_witness_early``).
_EARLY_WITNESS: list[Any] = []
#: Targets built by another framework than Keras, so ``convert`` runs a Keras source in a
#: witness process (``verbs.convert._source_runner_started``).
_WITNESSED_SUFFIXES = (".pt2", ".pt", ".pth", ".skops", ".joblib")


def _start_witness_early(args: list[str]) -> None:
    """For ``convert MODEL.keras OUT.pt2`` (or ``.h5``; to a torch or scikit-learn target,
    verified), start the Keras witness process now, before weightio imports anything.

    It imports Keras (seconds) while this process parses, reads the file and builds the target,
    and touches no file until ``KerasFileRunner.spawn`` has checked the source and sends its
    name; if the command turns out not to need it, it is killed at exit. A guess from the
    command line only: whether a witness runs is still decided where it always was.
    """
    import os

    if (args[:1] != ["convert"] or "--no-verify" in args or "--to" in args
            or any(a in ("--help", "-h") for a in args)):
        return
    names = [a.lower() for a in args[1:] if not a.startswith("-")]
    if not (any(n.endswith((".keras", ".h5")) and not n.endswith(".weights.h5") for n in names)
            and any(n.endswith(_WITNESSED_SUFFIXES) for n in names)):
        return
    if any(m in sys.modules for m in ("keras", "tensorflow")):
        return
    try:
        if len(os.sched_getaffinity(0)) < 2:  # one core: nothing overlaps
            return
    except (AttributeError, OSError):
        if (os.cpu_count() or 1) < 2:
            return
    import atexit
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        _EARLY_WITNESS.append(subprocess.Popen(
            [sys.executable, "-m", "weightio.frameworks.keras.witness"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    except OSError:
        return
    atexit.register(_kill_early_witness)  # a command that failed before handing it over


def _kill_early_witness() -> None:
    while _EARLY_WITNESS:
        process = _EARLY_WITNESS.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()


def _hand_over_early_witness() -> None:
    """Give the early witness process (if any) to the Keras runner that will use it."""
    if _EARLY_WITNESS:
        from weightio.frameworks.keras.witness import start_early

        start_early(_EARLY_WITNESS.pop())


#: How ``--help`` names the value of an option (instead of the Python type, ``<list[str]>``).
_METAVARS = {
    "seed": "N", "samples": "N", "sample": "N", "atol": "X", "rtol": "X", "key": "KEY",
    "architecture": "FILE", "to": "TARGET", "head": "HEAD", "max_shard_size": "SIZE",
    "digest": "ALGORITHM", "html": "FILE", "plot": "DIR", "out": "PATH", "input_value": "VALUES",
    "input_path": "FILE", "output": "FILE", "dtype": "DTYPE", "layer": "LAYER",
    "older_than": "SECONDS", "layout": "LAYOUT",
}


def _name_values(command: Any) -> None:
    """Give every option that takes a value a metavar from ``_METAVARS`` (or its name), and show
    arguments by name only: help shows no Python types (``<list[Path]>``).
    """
    for sub in getattr(command, "commands", {}).values():
        for param in sub.params:
            if param.param_type_name == "option" and not param.is_flag and param.metavar is None:
                param.metavar = _METAVARS.get(param.name, param.name.upper())
            elif param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None  # typer would print <list[Path]>
        if getattr(sub, "commands", None):  # a group of verbs (weightio batch …)
            _name_values(sub)


def _click_errors() -> Any:
    """The exception classes of the click that typer runs on: typer >= 0.22 vendors its own copy
    (``typer._click``), older releases use the ``click`` package.
    """
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions
