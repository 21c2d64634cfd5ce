"""``weightio.cast`` and ``weightio cast`` (battery item 39): float weights only, overflow refused
with counts, underflow and NaN/Inf reported, NaN/Inf carried in kind, provenance recorded.

Real models: a torch MLP and a small Keras CNN cast to float16 are compared, through a rebuilt
torch model and the numpy runtime, with the float16 tolerances of ``weightio.verbs.proof``."""

from __future__ import annotations

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import weightio
from weightio.errors import SpecValidationError, UnsupportedDtypeError
from weightio.format.archive import Archive, tensor_ref
from weightio.spec.core import DenseLayer
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec, Provenance
from weightio.verbs.proof import DEFAULT_TOLERANCES, compare

torch = pytest.importorskip("torch")


def _dense_archive(w: np.ndarray, b: np.ndarray | None = None) -> Archive:
    b = np.zeros(w.shape[0], w.dtype) if b is None else b
    layer = DenseLayer(name="fc", units=w.shape[0], in_features=w.shape[1],
                       weight=tensor_ref("fc.weight", w), bias=tensor_ref("fc.bias", b))
    spec = ModelSpec(name="t", provenance=Provenance(source_framework="weightio", weightio_version="t",
                     created_at="now"), inputs=[InputSpec(name="x", shape=(w.shape[1],))],
                     layers=[layer], outputs=[OutputSpec(name="y", layer="fc")])
    return Archive(spec, {"fc.weight": w, "fc.bias": b})


def _f16_check(reference: np.ndarray, got: np.ndarray) -> None:
    atol, rtol = DEFAULT_TOLERANCES["float16"]
    check = compare("y", ("float32", "float16"), reference, got, atol=atol, rtol=rtol)
    assert check.passed, check


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )
    with torch.no_grad():  # non-trivial running statistics
        model.train()(torch.randn(64, 6) * 3 + 1)
    return model.eval()


def test_torch_model_cast_to_float16_computes_within_float16_tolerance(torch_model, tmp_path) -> None:
    x = np.random.default_rng(1).standard_normal((16, 6)).astype("f4")
    ref = torch_model(torch.from_numpy(x)).detach().numpy()
    archive = weightio.read(torch_model)
    weightio.save(archive, tmp_path / "f32.safetensors")
    result = weightio.cast(tmp_path / "f32.safetensors", "float16")
    assert {t.dtype for t in result.cast} == {"F16"} and len(result.cast) == 8
    path = tmp_path / "f16.safetensors"
    weightio.save(result.archive, path)
    loaded = weightio.load(path, verify=True)  # fresh sha256 for the cast tensors
    assert {ref.dtype for _, _, ref in loaded.spec.tensor_refs()} == {"F16"}
    assert loaded.spec.inputs[0].dtype == "F16"
    # every value is exactly the float16 rounding of the source
    for key, src in archive.tensors.items():
        assert np.array_equal(np.asarray(loaded.tensors[key]), np.asarray(src).astype(np.float16))
    _f16_check(ref, weightio.run(loaded, x))
    rebuilt = weightio.to_torch(loaded)
    assert next(rebuilt.parameters()).dtype == torch.float16
    with torch.no_grad():
        got = rebuilt(torch.from_numpy(x).half()).float().numpy()
    _f16_check(ref, got)


def test_cast_records_provenance_and_drops_the_old_proof(torch_model, tmp_path) -> None:
    converted = weightio.convert(torch_model, tmp_path / "m.safetensors")
    assert weightio.load(tmp_path / "m.safetensors").spec.verification
    result = weightio.cast(tmp_path / "m.safetensors", "bfloat16")
    spec = result.archive.spec
    assert spec.verification == []  # it proved the float32 weights, not these
    assert result.dropped_verification == [converted.verification.target]
    assert any(line.startswith("cast: 8 float tensor(s) from F32 to BF16") for line in spec.provenance.transforms)
    assert any("dropped verification" in line for line in spec.provenance.transforms)
    assert all(ref.recorded_digest() is None for _, _, ref in spec.tensor_refs())  # refreshed on save


def test_bfloat16_round_trip_is_exact_after_the_first_rounding(torch_model) -> None:
    archive = weightio.read(torch_model)
    bf16 = weightio.cast(archive, "bf16").archive
    back = weightio.cast(bf16, "float32").archive
    again = weightio.cast(back, "bfloat16").archive
    for key, src in archive.tensors.items():
        rounded = np.asarray(src).astype(ml_dtypes.bfloat16)
        assert np.array_equal(np.asarray(bf16.tensors[key]).view(np.uint16), rounded.view(np.uint16))
        assert np.array_equal(np.asarray(back.tensors[key]), rounded.astype(np.float32))  # widening is exact
        assert np.asarray(again.tensors[key]).tobytes() == np.asarray(bf16.tensors[key]).tobytes()


def test_overflow_is_refused_naming_tensors_and_counts() -> None:
    w = np.ones((3, 4), "f4")
    w[0, :2] = [1e5, -7e4]
    b = np.array([1.0, 7e4, 2.0], "f4")
    with pytest.raises(UnsupportedDtypeError) as info:
        weightio.cast(_dense_archive(w, b), "float16")
    message = str(info.value)
    assert "overflow 3 values" in message
    assert "fc.weight: 2 of 12" in message and "fc.bias: 1 of 3" in message
    assert "bfloat16" in message and "scale" in message
    # bfloat16 has float32's range: the same weights cast, exactly rounded
    result = weightio.cast(_dense_archive(w, b), "bfloat16")
    assert float(np.asarray(result.archive.tensors["fc.weight"])[0, 0]) == float(ml_dtypes.bfloat16(1e5))


def test_underflow_is_counted_not_refused() -> None:
    w = np.full((2, 3), 0.5, "f4")
    w[0, 0], w[1, 2] = 1e-9, -1e-10  # below float16's smallest subnormal (6e-8)
    w[1, 0] = 1e-6  # a float16 subnormal: kept, not counted
    result = weightio.cast(_dense_archive(w), "float16")
    weight = next(t for t in result.cast if t.key == "fc.weight")
    assert weight.underflow == 2 and result.underflow == 2
    assert "underflow: 2 non-zero value(s) became 0 (fc.weight: 2)" in str(result)
    assert np.asarray(result.archive.tensors["fc.weight"])[1, 0] != 0


def test_nan_and_inf_are_carried_in_kind_and_reported() -> None:
    w = np.ones((2, 3), "f4")
    w[0, 0], w[0, 1], w[0, 2] = np.nan, np.inf, -np.inf
    w[1, 0] = -np.nan
    for dtype in ("float16", "bfloat16", "float64"):
        result = weightio.cast(_dense_archive(w), dtype)
        out = np.asarray(result.archive.tensors["fc.weight"]).astype(np.float64)
        assert np.isnan(out[0, 0]) and np.isnan(out[1, 0])
        assert np.signbit(out[1, 0]) and not np.signbit(out[0, 0])  # the NaN's sign too
        assert out[0, 1] == np.inf and out[0, 2] == -np.inf
        weight = next(t for t in result.cast if t.key == "fc.weight")
        assert (weight.nan, weight.posinf, weight.neginf) == (2, 1, 1)
        assert "fc.weight: 2 NaN, 1 +inf, 1 -inf" in str(result)


def test_integer_tensors_are_left_untouched(tmp_path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    state = model.state_dict()  # holds num_batches_tracked, an int64
    archive = weightio.read(dict(state))
    result = weightio.cast(archive, "float16")
    assert result.untouched == {"1.num_batches_tracked": "I64"}
    out = result.archive
    assert np.asarray(out.tensors["1.num_batches_tracked"]).dtype == np.int64
    assert "not float, left untouched: 1.num_batches_tracked (I64)" in str(result)


def test_sklearn_float64_archive_casts_to_float32() -> None:
    sklearn = pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    del sklearn
    X, y = load_iris(return_X_y=True)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    archive = weightio.read(est)
    assert {ref.dtype for _, _, ref in archive.spec.tensor_refs()} == {"F64"}
    result = weightio.cast(archive, np.float32)
    assert {ref.dtype for _, _, ref in result.archive.spec.tensor_refs()} == {"F32"}
    atol, rtol = DEFAULT_TOLERANCES["float32"]
    check = compare("p", ("f64", "f32"), est.predict_proba(X), weightio.run(result.archive, X),
                    atol=atol, rtol=rtol)
    assert check.passed, check
    rebuilt = weightio.to_sklearn(result.archive)
    assert compare("p", ("f64", "sk"), est.predict_proba(X), rebuilt.predict_proba(X),
                   atol=atol, rtol=rtol).passed


def test_layers_option_casts_only_those(torch_model) -> None:
    archive = weightio.read(torch_model)
    result = weightio.cast(archive, "float16", layers=["3"])
    dtypes = {ref.key: ref.dtype for _, _, ref in result.archive.spec.tensor_refs()}
    assert dtypes["3.weight"] == "F16" and dtypes["0.weight"] == "F32"
    assert result.archive.spec.inputs[0].dtype == "F32"  # mixed: the input keeps its dtype
    with pytest.raises(SpecValidationError, match="no layer named 'nope'"):
        weightio.cast(archive, "float16", layers=["nope"])


def test_bad_dtype_is_refused() -> None:
    w = np.ones((2, 2), "f4")
    for bad in ("int8", "float8", "F8_E4M3", np.int32):
        with pytest.raises(UnsupportedDtypeError, match="float16, bfloat16, float32 or float64"):
            weightio.cast(_dense_archive(w), bad)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True, text=True)


def test_cli_cast_writes_and_reports_and_refuses_overflow_leaving_nothing(tmp_path) -> None:
    w = np.ones((3, 4), "f4")
    w[1, 1] = 1e5
    src = tmp_path / "big.safetensors"
    weightio.save(_dense_archive(w), src)
    out = tmp_path / "out.safetensors"
    done = _cli("cast", str(src), str(out), "--dtype", "float16")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "big.safetensors" in done.stderr and "overflow 1 values" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]
    done = _cli("cast", str(src), str(out), "--dtype", "bfloat16")
    assert done.returncode == 0, done.stderr
    assert "cast 2 tensor(s), 15 values, from F32 to BF16" in done.stdout and "underflow: none" in done.stdout
    assert weightio.load(out, verify=True).spec.layers[0].weight.dtype == "BF16"
    assert _cli("cast", str(src), str(out), "--dtype", "int4").returncode == 2
