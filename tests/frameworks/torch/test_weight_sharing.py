"""Weight sharing: a module with parameters called twice, and an LM head tied to its embedding,
become layers referencing the same tensor key; the archive stores it once; ``to_torch`` ties the
parameters again; inspect and diff show the sharing and count it once (docs/format.md, "Shared
tensors").
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weightio  # noqa: E402
from weightio.analysis.inspect import inspect_archive  # noqa: E402
from weightio.errors import SpecValidationError  # noqa: E402
from weightio.format.safetensors import read_header  # noqa: E402
from weightio.frameworks.torch.read.export import read_exported  # noqa: E402
from weightio.spec.serialization import spec_from_data  # noqa: E402

pytestmark = pytest.mark.torch


class TiedLM(torch.nn.Module):
    """Embedding -> fc (called twice) -> head, whose weight is the embedding's."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(11, 6)
        self.fc = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc(torch.relu(self.fc(self.emb(ids))))))


@pytest.fixture
def model() -> TiedLM:
    torch.manual_seed(3)
    return TiedLM().eval()


IDS = torch.tensor([[1, 2, 3, 10], [4, 5, 6, 0]])
SHARED = {"emb.weight": ["emb.weight", "head.weight"], "fc.weight": ["fc.weight", "fc_1.weight"],
          "fc.bias": ["fc.bias", "fc_1.bias"]}


def test_tied_model_round_trips_with_the_tie_kept_and_the_tensor_stored_once(model, tmp_path) -> None:
    archive = weightio.read(model, example_input=IDS)
    assert archive.spec.shared_tensors() == SHARED
    assert sorted(archive.tensors) == ["emb.weight", "fc.bias", "fc.weight"]
    assert "unused_state_dict_keys" not in archive.spec.extra.get("torch", {})  # head.weight is tied
    path = tmp_path / "tied.safetensors"
    weightio.save(archive, path)
    with open(path, "rb") as handle:
        header = read_header(handle, path)
    assert sorted(header.entries) == ["emb.weight", "fc.bias", "fc.weight"]
    loaded = weightio.load(path)
    back = weightio.to_torch(loaded)
    assert back.head.weight is back.emb.weight
    assert back.fc_1.weight is back.fc.weight and back.fc_1.bias is back.fc.bias
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        np.testing.assert_array_equal(back(IDS).numpy(), model(IDS).numpy())
    np.testing.assert_allclose(weightio.run(loaded, IDS.numpy()), model(IDS).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    # Back again: the rebuilt model reads with the same sharing.
    again = weightio.read(back, example_input=IDS)
    assert sorted(again.tensors) == sorted(archive.tensors)
    assert len(again.spec.shared_tensors()) == 3


def test_the_export_path_shares_the_same_way(model) -> None:
    archive = read_exported(model, IDS)
    assert archive.spec.shared_tensors() == SHARED
    assert sorted(archive.tensors) == ["emb.weight", "fc.bias", "fc.weight"]


def test_inspect_and_diff_count_a_shared_tensor_once_and_say_so(model) -> None:
    archive = weightio.read(model, example_input=IDS)
    report = inspect_archive(archive)
    unique = sum(p.numel() for p in model.parameters())  # torch counts a tied parameter once
    assert report.parameter_count == archive.parameter_count == unique == 11 * 6 + 6 * 6 + 6
    head = next(layer for layer in report.layers if layer.name == "head")
    assert head.tensors[0].key == "emb.weight"
    assert head.tensors[0].shared_by == ["emb.weight", "head.weight"]
    assert report.total_bytes == 4 * unique
    diff = weightio.diff(archive, archive)
    assert diff.identical and diff.a.tensors == 3 and diff.a.parameters == unique
    tied = [e for e in diff.entries if e.layer == "head"]
    assert tied[0].shared_a == ["emb.weight", "head.weight"]
    assert "shared_by" in json.dumps(report.model_dump())


def test_a_key_read_as_two_dtypes_is_refused(model) -> None:
    data = weightio.read(model, example_input=IDS).spec.model_dump(mode="json", exclude_none=True)
    assert spec_from_data(data).shared_tensors() == SHARED
    head = next(layer for layer in data["layers"] if layer["name"] == "head")
    head["weight"]["dtype"] = "F64"
    with pytest.raises(SpecValidationError, match="a shared tensor has one shape and dtype"):
        spec_from_data(data)
