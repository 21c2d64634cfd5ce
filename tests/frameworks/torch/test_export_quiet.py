"""Writing a recurrent model as .pt2 is quiet: torch.export's "tensor attributes ...
_flat_weights ... assigned during export" warning (nn.LSTM rebuilds that list in forward) is
handled, and the program is still verified (the suite turns any warning into an error)."""

from __future__ import annotations

import warnings

import pytest

import weightio

torch = pytest.importorskip("torch")


class Tagger(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 6, batch_first=True)
        self.gru = torch.nn.GRU(6, 5, batch_first=True)
        self.fc = torch.nn.Linear(5, 2)

    def forward(self, x):
        y, _ = self.lstm(x)
        z, _ = self.gru(y)
        return self.fc(z[:, -1])


def test_lstm_and_gru_export_without_warnings(tmp_path):
    torch.manual_seed(0)
    archive = weightio.read(Tagger().eval(), example_input=torch.zeros(1, 5, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = weightio.convert(archive, tmp_path / "tagger.pt2")
    assert result.verification.passed
