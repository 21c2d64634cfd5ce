"""Every transform is measured: the original and the transformed archive on the same seeded
probes through the numpy runtime; worst abs/rel change, top-1 agreement, provenance, refusal."""

from __future__ import annotations

import numpy as np
import pytest

import weightio
from weightio.errors import VerificationError
from weightio.runtime.probes import probe_inputs
from weightio.transforms.measure import NOT_COMPARED, finish, measure, refuse_above

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    ).eval()
    return weightio.read(model)


def _nudged(archive, amount: float):
    weight = np.asarray(archive.tensors["2.weight"]).copy()
    weight[0, :] += amount
    return archive.replace({"2.weight": weight})


def test_measure_reports_the_runtime_difference_on_the_seeded_probes(mlp) -> None:
    changed = _nudged(mlp, 0.5)
    m = measure(mlp, changed, seed=3, samples=16)
    x = probe_inputs(mlp.spec, seed=3, samples=16)[0]
    before, after = weightio.run(mlp, x).astype("f8"), weightio.run(changed, x).astype("f8")
    worst = np.abs(after - before).max()
    assert m.compared and m.samples == 16 and m.seed == 3
    assert m.worst_abs == pytest.approx(worst) and m.worst_rel == pytest.approx(
        worst / np.abs(before).max()
    )
    assert m.top1_agreement == pytest.approx(np.mean(before.argmax(1) == after.argmax(1)))
    same = measure(mlp, mlp)
    assert same.worst_abs == 0.0 and same.top1_agreement == 1.0
    assert "top-1 agreement 100.0%" in same.line()


def test_weights_only_archives_say_no_outputs_were_compared(tmp_path) -> None:
    torch.save({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}, tmp_path / "sd.pt")
    archive = weightio.read(tmp_path / "sd.pt")
    m = measure(archive, archive)
    assert not m.compared and m.worst_abs is None and m.line() == NOT_COMPARED
    refuse_above(m, 0.0, "prune")  # nothing compared: nothing to refuse


def test_max_change_refuses_and_finish_records_the_figures(mlp) -> None:
    changed = _nudged(mlp, 0.5)
    data = changed.spec.model_dump(mode="json")
    tensors = dict(changed.tensors)
    with pytest.raises(VerificationError, match=r"more than max_change=1e-06; nothing was written"):
        finish("nudge", mlp, data, tensors, ["nudge: row 0 of 2.weight"], max_change=1e-6)
    result = finish(
        "nudge",
        mlp,
        changed.spec.model_dump(mode="json"),
        tensors,
        ["nudge: row 0 of 2.weight"],
        max_change=10.0,
    )
    lines = result.archive.spec.provenance.transforms
    assert "nudge: row 0 of 2.weight" in lines
    assert any(
        line.startswith("nudge: measured on 8 seeded probes (seed 0): worst abs") for line in lines
    )
    assert result.measurement.worst_rel <= 10.0 and result.size_before == result.size_after
    assert all(ref.recorded_digest() is None for _, _, ref in result.archive.spec.tensor_refs())


def test_finish_drops_the_recorded_proof(mlp, tmp_path) -> None:
    weightio.convert(torch.nn.Sequential(torch.nn.Linear(3, 2)), tmp_path / "p.safetensors")
    proved = weightio.load(tmp_path / "p.safetensors")
    assert proved.spec.verification
    result = finish(
        "noop", proved, proved.spec.model_dump(mode="json"), dict(proved.tensors), ["noop: nothing"]
    )
    assert result.archive.spec.verification == []
    assert any(
        "dropped verification records (" in line
        for line in result.archive.spec.provenance.transforms
    )
