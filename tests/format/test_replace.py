"""``archive.replace({...})`` makes a new archive with tensors swapped; the old one is unchanged,
the new one records new digests when saved, and drops the verification it no longer earns."""

from __future__ import annotations

import numpy as np
import pytest

import weightio
from weightio.errors import SpecValidationError, UnsupportedDtypeError

torch = pytest.importorskip("torch")


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    weightio.convert(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()), path)
    return weightio.load(path)


def test_replace_makes_a_new_archive(saved, tmp_path):
    old_weight = np.array(saved.tensors["0.weight"])
    new_weight = np.full((2, 3), 0.5, dtype=np.float32)
    new = saved.replace({"0.weight": new_weight})
    np.testing.assert_array_equal(saved.tensors["0.weight"], old_weight)  # immutable
    np.testing.assert_array_equal(new.tensors["0.weight"], new_weight)
    np.testing.assert_array_equal(new.tensors["0.bias"], saved.tensors["0.bias"])
    assert new.spec.verification == [] and saved.spec.verification
    assert new.spec.provenance.transforms[-1] == "replaced 1 tensor(s): 0.weight"
    weight_ref = new.spec.layer("0").weight
    assert weight_ref.digest is None and new.spec.layer("0").bias.digest is not None
    weightio.save(new, tmp_path / "new.safetensors")
    reloaded = weightio.load(tmp_path / "new.safetensors")
    reloaded.verify()
    assert reloaded.spec.layer("0").weight.digest != saved.spec.layer("0").weight.digest
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(weightio.run(reloaded, x), np.tanh(x @ new_weight.T + saved.tensors["0.bias"]),
                               rtol=1e-6)


def test_replace_refuses_what_would_change_the_model(saved):
    with pytest.raises(SpecValidationError, match="no such tensor") as info:
        saved.replace({"9.weight": np.zeros((2, 3), np.float32)})
    assert info.value.tensor == "9.weight"
    with pytest.raises(UnsupportedDtypeError, match="F64"):
        saved.replace({"0.weight": np.zeros((2, 3), np.float64)})
    with pytest.raises(SpecValidationError, match=r"shape \[3, 2\]"):
        saved.replace({"0.weight": np.zeros((3, 2), np.float32)})
