"""Generate docs/transforms.md: what each transform costs on a small CNN trained on digits.

``python scripts/gen_transforms_page.py`` trains a small CNN (two conv + batch norm blocks, a
dense head) for a few epochs on scikit-learn's 8×8 digits with PyTorch, seeded, reads it into an
archive, and applies ``weightio.prune`` (50% unstructured, 25% structured), ``weightio.quantize``
(int8, per output channel), ``weightio.fold`` and ``weightio.weight_norm``. Each result is saved, converted with
``weightio.convert`` to ``.keras`` and ``.pt2`` (both verified against the numpy runtime before
they are written), loaded back with Keras and ``torch.export.load`` and run on the held-out
digits. The int8 row is also written with ``convert(..., keep_int8=True)`` (``.pt2`` and ``.pt``)
and the input importance is ranked by probe gradients. Every number on the page is what this run
measured; nothing is typed in by hand.
``--check`` fails (exit 1) when the page on disk differs from the one this run renders.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "transforms.md"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: (row label, the call) of every transform on the page, in order.
TRANSFORMS = [
    ("original", None),
    ("prune 50% unstructured", ("prune", {"sparsity": 0.5})),
    ("prune 25% structured", ("prune", {"sparsity": 0.25, "structured": True})),
    ("quantize int8 per channel", ("quantize", {"dtype": "int8"})),
    ("fold batch norm", ("fold", {})),
    ("weight-norm form", ("weight_norm", {})),
]
SEED = 0
EPOCHS = 8
PROBES = 64


def train() -> tuple[object, np.ndarray, np.ndarray, float]:
    """The trained torch CNN, the held-out digits (N, 1, 8, 8) and labels, its test accuracy."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.2, random_state=SEED,
                                                        stratify=digits.target)
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(),
        torch.nn.Dropout(0.2), torch.nn.Linear(64, 10),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        for batch in torch.randperm(len(xt), generator=generator).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return model, x_test, y_test, accuracy


def measure_all() -> dict:
    """Every row's figures, as this run measured them."""
    import keras
    import torch

    import weightio

    model, x_test, y_test, trained_accuracy = train()
    original = weightio.read(model, example_input=torch.zeros(1, 1, 8, 8))
    reference = weightio.run(original, x_test)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, call in TRANSFORMS:
            if call is None:
                archive, measurement = original, None
            else:
                verb, options = call
                result = getattr(weightio, verb)(original, samples=PROBES, **options)
                archive, measurement = result.archive, result.measurement
            path = Path(folder) / f"{len(rows)}.safetensors"
            weightio.save(archive, path)
            loaded = weightio.load(path, verify=True)
            outputs = weightio.run(loaded, x_test)
            row = {
                "label": label, "parameters": loaded.parameter_count, "bytes": path.stat().st_size,
                "accuracy": float((outputs.argmax(1) == y_test).mean()),
                "agreement": float((outputs.argmax(1) == reference.argmax(1)).mean()),
                "digits_change": float(np.abs(outputs.astype("f8") - reference).max()),
                "probe_rel": None if measurement is None else measurement.worst_rel,
                "probe_agreement": None if measurement is None else measurement.top1_agreement,
                "layers": [f"{layer.name}:{'×'.join(map(str, layer.tensor_refs()['weight'].shape))}"
                           for layer in loaded.spec.layers if layer.kind in ("conv", "dense")],
            }
            weightio.convert(path, Path(folder) / f"{len(rows)}.keras")
            native = keras.saving.load_model(Path(folder) / f"{len(rows)}.keras")
            keras_out = np.asarray(native(x_test.transpose(0, 2, 3, 1)))
            weightio.convert(path, Path(folder) / f"{len(rows)}.pt2")
            program = torch.export.load(Path(folder) / f"{len(rows)}.pt2").module()
            with torch.no_grad():
                torch_out = program(torch.from_numpy(x_test)).numpy()
            row["keras"] = float(np.abs(keras_out.astype("f8") - outputs).max())
            row["torch"] = float(np.abs(torch_out.astype("f8") - outputs).max())
            row["torch_shapes"] = [
                "×".join(map(str, m.weight.shape)) for m in program.modules()
                if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
            ] or [f"{k}:{'×'.join(map(str, v.shape))}" for k, v in program.state_dict().items()
                  if k.endswith(("weight", "original1")) and v.ndim >= 2]
            if call is not None and call[0] == "quantize":
                row["kept"] = _keep_int8(path, Path(folder), x_test, outputs)
            rows.append(row)
    found = weightio.importance(original, gradients=True, samples=PROBES)
    gradients = {"top": found.ranked(5), "objective": found.objective}
    return {"trained_accuracy": trained_accuracy, "test_digits": int(len(y_test)), "rows": rows,
            "gradients": gradients}


def _keep_int8(path: Path, folder: Path, x_test: np.ndarray, outputs: np.ndarray) -> dict:
    """The int8 archive written with and without ``keep_int8``: file sizes, and the kept
    program's worst logit difference from the runtime on the held-out digits."""
    import torch

    import weightio

    sizes = {}
    for kept in (True, False):
        for suffix in (".pt2", ".pt"):
            target = folder / f"int8-{kept}{suffix}"
            weightio.convert(path, target, keep_int8=kept)
            sizes[f"{suffix[1:]}_{'kept' if kept else 'plain'}"] = target.stat().st_size
    program = torch.export.load(folder / "int8-True.pt2").module()
    with torch.no_grad():
        kept_out = program(torch.from_numpy(x_test)).numpy()
    return {**sizes, "torch": float(np.abs(kept_out.astype("f8") - outputs).max())}


HEADER = """# Transforms: prune, quantize, fold — and what each one cost

`weightio fold`, `weightio prune`, `weightio quantize` (and `weightio.fold`, `weightio.prune`,
`weightio.quantize`) change an archive's weights and say how far the outputs moved: they run the
original and the transformed archive on the same seeded probe inputs through the numpy runtime
and record, in `provenance.transforms`, the worst absolute change, the worst change relative to
the output's scale (`max |y' - y| / max |y|`) and, for an output of shape `[batch, classes]`, the
share of probe inputs whose top class stayed the same (top-1 agreement). `--max-change X` (or
`max_change=`) refuses a result whose relative change exceeds `X`, and nothing is written. A
weights-only archive (a bare state dict) has no architecture to run: the report then says that no
outputs were compared. The recorded conversion proofs are dropped (they proved the old weights).
`weightio importance` ranks the inputs of the first layer by its weights, or every input element
by probe-input gradients. `weightio fold --to weight-norm` (`weightio.weight_norm`) is fold's
reverse, and `weightio convert --keep-int8` keeps quantised weights int8 in PyTorch.

## On a CNN trained on digits

Generated by `python scripts/gen_transforms_page.py`; do not edit by hand. A CNN (conv 16 + batch
norm, conv 32 + batch norm, max pool, dense 64, dropout, dense 10) trained with PyTorch for
{epochs} epochs on scikit-learn's 8×8 digits reaches {accuracy:.1%} on {test} held-out digits. Each
row is one transform of that model, saved, loaded back (digests verified), converted with
`weightio convert` to `.keras` and `.pt2` (each verified against the runtime before it is
written), and run again in Keras and in `torch.export.load(...).module()` on the held-out digits.

- *size*: the archive file on disk; *probe rel. Δ* and *probe top-1*: the measurement the
  transform recorded ({probes} seeded standard-normal probes, not digits);
- *digits top-1*: the share of the held-out digits whose predicted class is the original's;
  *accuracy*: the share classified right; *digits |Δ|*: the worst change of a logit on them;
- *Keras*, *PyTorch*: the worst difference between the converted model's logits and the numpy
  runtime's on the held-out digits: the converted models compute the outputs weightio reports.

| transform | params | size | probe rel. Δ | probe top-1 | digits top-1 | accuracy | digits \\|Δ\\| | Keras | PyTorch |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
"""

FOOTER = """
Weight shapes of the PyTorch programs (`conv`/`dense` weights, canonical `[out, in, …]`; the
weight-norm form's `v`, `parametrizations.weight.original1`):

{shapes}

The int8 row written with `weightio convert --keep-int8`: the `.pt2` program is {pt2_kept:.1f} kB
(dequantised: {pt2_plain:.1f} kB), the `.pt` state dict {pt_kept:.1f} kB ({pt_plain:.1f} kB); the
program's logits on the held-out digits differ from the numpy runtime's by at most {kept_torch:.1e}.

Probe-input gradients (`weightio importance --gradients`) of the original model, {objective}:
the five pixels it listens to most are {top_pixels}.

## The transforms

- **`weightio fold SRC DST`** folds each batch norm into the conv or dense before it
  (`W' = W·s`, `b' = (b − mean)·s + β`, `s = γ / sqrt(var + eps)`, in float64, stored in the
  weight's dtype: exact up to that rounding; the tests hold it to 1e-5 relative on a torch and a
  Keras model), where that layer has no activation of its own and nothing else reads it; removes
  dropout and identity layers; and turns torch weight norm (`weight_g`/`weight_v`,
  `parametrizations.weight.original0/1`, found in state dicts) into plain weights,
  `w = g · v / ||v||`.
- **`weightio prune SRC DST --sparsity X`** zeroes the fraction `X` of weights with the smallest
  `|w|` in each conv/dense layer (`--scope global`: over all of them together). With
  `--structured` it removes whole conv filters / dense units by L1 (`--norm l2`: L2) norm: the
  layer, its batch norm and the next conv's input channels (or, through a flatten, the next
  dense's input features) shrink, so the model is smaller, not just sparse. A layer whose output
  reaches a model output, an addition, a concatenation or a reshape is kept whole and the report
  says so. `--include`/`--exclude` take layer names, globs or kinds (`conv`). The report has a
  row per layer: sparsity, parameters before and after. Unstructured pruning leaves the size as
  it was (the archive stores the zeros; the table's row is a few bytes larger for its provenance
  lines); structured pruning is what makes the model smaller. Neither fine-tunes: the accuracy
  the table shows is what pruning a trained model costs before any retraining.
- **`weightio quantize SRC DST`** stores conv/dense weights in 8 bits, per output channel (or
  `--per-tensor`): `int8` symmetric (`scale = max|w| / 127`, `q = round(w / scale)`), int8
  `--asymmetric` (`scale = (max(w, 0) − min(w, 0)) / 255`, a zero point, `q` over −128…127),
  `--dtype float8_e4m3` or `float8_e5m2` (`scale = max|w| / 448` or `/ 57344`). The archive
  stores the integers, the float32 scale and the zero point as an encoded parameter (format 1.2,
  [format.md](format.md#encoded-parameters-12)); the runtime and every writer decode it by the
  one documented rule, so `.keras` and `.pt2` files built from it hold the dequantised weights.
  Biases and normalisation parameters stay float. The report gives the size before and after.
  `weightio convert archive.safetensors out.pt2 --keep-int8` (or `.pt`;
  `weightio.to_torch(archive, keep_int8=True)`) keeps the int8 conv/dense weights int8 in
  PyTorch: weightio's `QuantizedConv`/`QuantizedLinear` hold the integers, the scale and the
  zero point as buffers and decode them in `forward` by the same rule, so they compute the
  dequantising writer's outputs from a state dict about 4x smaller (the layout is in
  [format.md](format.md#encoded-parameters-12)). Float8 weights and other kinds (separable,
  transposed convolutions) are dequantised and named in a warning. Read back, such a module or
  its `.pt2` program gives the quantised archive again.
- **`weightio fold SRC DST --to weight-norm`** (`weightio.weight_norm`) is the reverse of fold's
  weight-norm step: each conv/dense weight (`--include`/`--exclude` as for prune) is stored as
  `v = w` and `g = ||w||` over all axes but the output axis (torch's `weight_norm`, `dim=0`),
  the encoded parameter of scheme `weight_norm`. The torch writer builds those layers with
  `torch.nn.utils.parametrizations.weight_norm` (state-dict keys
  `parametrizations.weight.original0/1`), the runtime and the Keras writer recombine
  `w = g · v / ||v||` (in float64), and `weightio fold` makes them plain again (equal to the
  original weights up to that one rounding). A live torch module under `weight_norm`, and a
  `.pt2` program of one (`aten._weight_norm`), read in this form too.
- **`weightio importance SRC`** ranks the inputs of the first dense layer (the share of its
  `Σ|W|` each input feature meets; pixels of each channel when it reads a flattened image) or
  the input channels of the first conv; `--plot DIR` draws a heat map for image inputs. With
  `--gradients` (`weightio.importance(src, gradients=True)`) it ranks every input element by
  the mean `|∂f/∂x|` over the seeded probe inputs (`--seed`, `--samples`), `f` the first
  output's value at the top class of each unperturbed probe (the sum of its values when it is
  not `[batch, classes]`). The numpy runtime has no autodiff: the gradient is a central
  difference `(f(x + h·e_j) − f(x − h·e_j)) / 2h`, `h = 1e-6`, through the runtime in float64,
  every perturbed input of a chunk of probes in one batch (2 × inputs forward rows per probe:
  for a 28×28 input into a conv 16, conv 32, dense 64 CNN, 8 probes took 31 s of CPU). It
  agrees with torch's autograd on the same probes to about 1e-9 of the largest gradient (7e-9
  on that CNN), except where a ReLU or max pool switches within `h` of a probe; the tests hold
  it to 1e-7. The heat map works for it.
"""


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _sci(value: float | None) -> str:
    return "—" if value is None else f"{value:.1e}"


def render(results: dict) -> str:
    """The page for the figures of ``measure_all``."""
    lines = []
    for r in results["rows"]:
        lines.append(
            f"| {r['label']} | {r['parameters']:,} | {r['bytes'] / 1000:.1f} kB | {_sci(r['probe_rel'])} | "
            f"{_pct(r['probe_agreement'])} | {_pct(r['agreement'])} | {_pct(r['accuracy'])} | "
            f"{_sci(r['digits_change'])} | {_sci(r['keras'])} | {_sci(r['torch'])} |"
        )
    shapes = "\n".join(f"- {r['label']}: {', '.join(r['torch_shapes'])}" for r in results["rows"])
    header = HEADER.format(epochs=EPOCHS, accuracy=results["rows"][0]["accuracy"], test=results["test_digits"],
                           probes=PROBES)
    kept = next(r["kept"] for r in results["rows"] if "kept" in r)
    gradients = results["gradients"]
    top_pixels = ", ".join(f"{label} ({share:.1%})" for _, label, share in gradients["top"])
    return header + "\n".join(lines) + "\n" + FOOTER.format(
        shapes=shapes, pt2_kept=kept["pt2_kept"] / 1000, pt2_plain=kept["pt2_plain"] / 1000,
        pt_kept=kept["pt_kept"] / 1000, pt_plain=kept["pt_plain"] / 1000, kept_torch=kept["torch"],
        objective=gradients["objective"].replace("f = ", "`f` = "), top_pixels=top_pixels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/transforms.md is not current")
    args = parser.parse_args()
    text = render(measure_all())
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is not what this run measures; regenerate it", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
