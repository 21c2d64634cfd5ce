"""``inspect`` counts trainable parameters and non-trainable buffers apart (as Keras summary()
and torchinfo do), shows each layer's output shape for the model's input shape, and sizes in
KB/MB."""

from __future__ import annotations

import pytest

import weightio
from weightio.analysis.inspect import inspect_archive
from weightio.report.text import human_bytes

torch = pytest.importorskip("torch")


def test_trainable_buffers_output_shapes_and_sizes():
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 10),
    ).eval()
    report = inspect_archive(weightio.read(module, example_input=torch.zeros(1, 3, 8, 8)))
    trainable = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for name, b in module.named_buffers() if "num_batches" not in name)
    assert (report.trainable_count, report.buffer_count) == (trainable, buffers)
    assert report.parameter_count == trainable + buffers
    assert [layer.output_shape for layer in report.layers] == [
        [8, 6, 6], [8, 6, 6], [8, 6, 6], [288], [10]
    ]
    bn = report.layers[1]
    assert {t.param: t.role for t in bn.tensors} == {
        "weight": "trainable", "bias": "trainable", "running_mean": "buffer", "running_var": "buffer"
    }
    assert report.total_bytes == 4 * (trainable + buffers)


def test_keras_non_trainable_weights_are_buffers():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4),
                              keras.layers.BatchNormalization()])
    report = inspect_archive(weightio.read(model))
    assert report.trainable_count == sum(int(w.numpy().size) for w in model.trainable_weights)
    assert report.buffer_count == sum(int(w.numpy().size) for w in model.non_trainable_weights)


@pytest.mark.parametrize(("count", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"),
                                             (5 * 1024**2, "5.0 MB"), (3 * 1024**3, "3.0 GB")])
def test_human_bytes(count, text):
    assert human_bytes(count) == text
