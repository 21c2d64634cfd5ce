"""torch.export is the first tracer for live modules, torch.fx the fallback where export cannot
go; both give the same archive, and provenance says which one read it and at what size."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import weightio
from weightio.errors import InvalidInputError, UnsupportedLayerError

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


class Net(nn.Module):
    """Convolutions, an in-place residual, an identity module, a method call, a view, a
    functional activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):  # noqa: ANN001, ANN201
        y = self.relu(self.bn(self.conv(x)))
        z = self.conv2(y)
        z += y
        z = self.drop(z.sigmoid())
        z = z.view(-1, 4 * 6 * 6)
        return F.log_softmax(self.fc(z), dim=1)


def _seeded(cls: type) -> nn.Module:
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _spec(archive: weightio.Archive) -> dict:
    data = json.loads(archive.spec.model_dump_json())
    return {key: value for key, value in data.items() if key != "provenance"}


def test_export_and_fx_give_the_same_archive_and_say_which_read_it():
    model = _seeded(Net)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype("float32"))
    exported = weightio.read(model, example_input=x)
    traced = weightio.read(model, example_input=x, tracer="fx")
    assert _spec(exported) == _spec(traced)
    assert set(exported.tensors) == set(traced.tensors) == set(model.state_dict()) - {
        "bn.num_batches_tracked"}
    assert exported.spec.provenance.transforms == ["traced with torch.export"]
    assert traced.spec.provenance.transforms == ["traced with torch.fx"]
    kinds = [(layer.name, layer.kind, layer.source_class) for layer in exported.spec.layers]
    assert ("drop", "dropout", "torch.nn.Dropout") in kinds  # an identity, kept as its layer
    assert ("sigmoid", "activation", "method:sigmoid") in kinds  # the source call, not aten's
    with torch.no_grad():
        want = model(x).numpy()
    for archive in (exported, traced):
        got = weightio.run(archive, x.numpy())
        assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))


def test_a_functional_dropout_is_read_by_fx_and_provenance_says_why():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):  # noqa: ANN001, ANN201
            return F.dropout(self.fc(x), p=0.5, training=self.training)

    archive = weightio.read(_seeded(Functional))
    assert [layer.kind for layer in archive.spec.layers] == ["dense", "dropout"]
    lines = archive.spec.provenance.transforms
    assert "traced with torch.fx" in lines
    assert any(line.startswith("torch.export not used (ExportGap: dropout called as a function")
               for line in lines)


def test_a_random_draw_in_eval_mode_is_refused_not_stored_as_a_constant():
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.fc(x) + torch.rand(3)

    for tracer in ("export", "export-only"):  # no fallback: fx would store the one draw it saw
        with pytest.raises(UnsupportedLayerError, match="draws random numbers"):
            weightio.read(_seeded(Noisy), tracer=tracer)


def test_an_unknown_tracer_is_a_typed_error():
    with pytest.raises(InvalidInputError, match="tracer='jit'"):
        weightio.read(nn.Sequential(nn.Linear(2, 2)), tracer="jit")


def test_reading_through_export_is_quiet():
    """Warnings torch emits while exporting (an LSTM's flat weights) never reach the user,
    whether export reads the module or gives way to fx."""

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 6, batch_first=True)
            self.fc = nn.Linear(6, 2)

        def forward(self, x):  # noqa: ANN001, ANN201
            y, _ = self.lstm(x)
            return self.fc(y[:, -1])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        archive = weightio.read(_seeded(Tagger), example_input=torch.zeros(1, 5, 4))
        weightio.read(_seeded(Net), example_input=torch.zeros(2, 3, 6, 6))
    assert [layer.kind for layer in archive.spec.layers][-1] == "dense"


def test_a_token_expanded_over_the_batch_records_the_traced_size_both_ways():
    class Token(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Parameter(torch.randn(1, 1, 4))
            self.fc = nn.Linear(4, 3)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.fc(torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1))

    x = torch.zeros(2, 5, 4)
    exported = weightio.read(_seeded(Token), example_input=x)
    traced = weightio.read(_seeded(Token), example_input=x, tracer="fx")
    assert _spec(exported) == _spec(traced)
    shapes = "shape arithmetic settled for the traced input shape(s) [2, 5, 4] (the batch axis kept free)"
    assert exported.spec.provenance.transforms == [shapes, "traced with torch.export"]
    assert traced.spec.provenance.transforms == [shapes, "traced with torch.fx"]
