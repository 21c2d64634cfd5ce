"""Sample archives for every kind the Keras writer registry holds, from real models.

``SAMPLES[kind]`` maps case ids to builders; each returns an archive that uses ``kind`` (read
from a real Keras model, PyTorch module or scikit-learn estimator with non-trivial weights:
random kernels, non-zero biases, BatchNorm statistics away from 0 and 1). The Keras writer
tests iterate ``KERAS_WRITE.keys()`` and fail for a kind missing here. ``REFUSED`` lists the
kinds whose sample must be refused by name (``opaque``), with the layer expected in the error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import weightio
from weightio.spec.activations import ActivationFn

#: kind -> the layer name its refusal must carry.
REFUSED = {"opaque": "prelu"}

#: id(archive) -> (archive, the Keras model it was read from, as Keras serializes it). The
#: archive is held so its id stays its own.
KERAS_SOURCES: dict[int, tuple[weightio.Archive, dict[str, Any]]] = {}


def keras_source(archive: weightio.Archive) -> dict[str, Any] | None:
    """The serialized Keras model ``archive`` was read from, if it was read from one as is."""
    entry = KERAS_SOURCES.get(id(archive))
    return entry[1] if entry is not None and entry[0] is archive else None


def _read_keras(model: Any) -> weightio.Archive:
    import keras

    archive = weightio.read(model)
    KERAS_SOURCES[id(archive)] = (archive, keras.saving.serialize_keras_object(model))
    return archive


def _randomize_keras(model: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for var in layer.weights:
            if var.path.endswith("count"):
                continue
            value = rng.standard_normal(tuple(var.shape)) * 0.5
            if "variance" in var.path:
                value = np.abs(value) + 0.5
            var.assign(value.astype(var.dtype))
    return model


def _keras(shape: tuple, *stack: Any, dtype: str = "float32", seed: int = 1) -> weightio.Archive:
    import keras

    model = keras.Sequential([keras.Input(shape, dtype=dtype), *stack], name="sample")
    return _read_keras(_randomize_keras(model, seed))


def _keras_graph(shapes: list[tuple], body: Callable[..., Any], seed: int = 1) -> weightio.Archive:
    import keras

    inputs = [keras.Input(shape, name=f"in{i}") for i, shape in enumerate(shapes)]
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], body(*inputs), name="graph")
    return _read_keras(_randomize_keras(model, seed))


def _torch(module: Any, shape: tuple, dtype: str = "float32", seed: int = 2) -> weightio.Archive:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.is_floating_point():
                value = torch.randn(tensor.shape, generator=gen) * 0.5
                tensor.copy_(value.abs() + 0.5 if name.endswith("running_var") else value)
    rng = np.random.default_rng(seed)
    if dtype == "int64":
        example = torch.from_numpy(rng.integers(0, 13, (2, *shape)))
    else:
        example = torch.from_numpy(rng.standard_normal((2, *shape)).astype(dtype))
    return weightio.read(module.eval(), example_input=example)


def with_activation(archive: weightio.Archive, name: str, fn: ActivationFn) -> weightio.Archive:
    """The archive with layer ``name``'s fused activation replaced (one Keras has no string for)."""
    layers = [l.model_copy(update={"activation": fn}) if l.name == name else l for l in archive.spec.layers]
    return archive.with_spec(archive.spec.model_copy(update={"layers": layers}))


# -- torch modules ----------------------------------------------------------------------------


def torch_cnn() -> Any:
    """Conv -> BatchNorm2d -> ReLU -> MaxPool -> Conv -> ReLU -> Flatten -> Linear."""
    import torch

    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 10),
    )


def _torch_classes() -> dict[str, Any]:
    import torch

    nn = torch.nn

    class Recurrent(nn.Module):
        def __init__(self, rnn: Any, take: str) -> None:
            super().__init__()
            self.rnn, self.take = rnn, take

        def forward(self, x: Any) -> Any:
            out = self.rnn(x)[0]
            return out[:, -1] if self.take == "last" else out

    class SelfAttention(nn.Module):
        def __init__(self, bias: bool) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True, bias=bias)
            self.fc = nn.Linear(8, 3)

        def forward(self, x: Any) -> Any:
            return self.fc(self.attn(x, x, x, need_weights=False)[0] + x)

    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(6, 2, 3)

        def forward(self, x: Any) -> Any:
            return self.head(torch.relu(torch.cat([self.a(x), self.b(x)], dim=1)))

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding, self.lstm, self.fc = nn.Embedding(13, 6), nn.LSTM(6, 5, batch_first=True), nn.Linear(5, 3)

        def forward(self, tokens: Any) -> Any:
            return self.fc(self.lstm(self.embedding(tokens))[0][:, -1])

    class DenseOnMap(nn.Module):
        """A Linear on the last axis of a feature map: Keras needs a permute to plain data."""

        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 3, 1), nn.Linear(4, 5)

        def forward(self, x: Any) -> Any:
            return self.fc(self.conv(x))

    return {"Recurrent": Recurrent, "SelfAttention": SelfAttention, "Branches": Branches,
            "Text": Text, "DenseOnMap": DenseOnMap}


def _t(name: str, *args: Any) -> Any:
    return _torch_classes()[name](*args)


def _nn() -> Any:
    import torch

    return torch.nn


def _L() -> Any:
    import keras

    return keras.layers


def _binary_logistic() -> weightio.Archive:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4))
    return weightio.read(LogisticRegression().fit(x, x[:, 0] + 0.3 * x[:, 1] > 0))


def _scaled_regression() -> weightio.Archive:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)) * [1.0, 5.0, 0.2] + [2.0, -1.0, 0.5]
    return weightio.read(make_pipeline(StandardScaler(), LinearRegression()).fit(x, x @ [1.0, -2.0, 0.5]))


def _then(base: weightio.Archive, *layers: Any, arrays: dict[str, np.ndarray] | None = None) -> weightio.Archive:
    """``base`` with ``layers`` appended after its last layer (its output moved to the last)."""
    spec = base.spec
    chain = [*spec.layers, *layers]
    outputs = [spec.outputs[0].model_copy(update={"name": "out", "layer": chain[-1].name})]
    return weightio.Archive(spec.model_copy(update={"layers": chain, "outputs": outputs}),
                            {**dict(base.tensors), **(arrays or {})})


def _ops_on_map() -> weightio.Archive:
    """A conv feature map, then every op on it in canonical terms: a per-channel learned scale,
    a divide by a literal, a channel slice, a mean over the spatial axes, a dense head."""
    from weightio.format.archive import tensor_ref
    from weightio.spec.core import DenseLayer
    from weightio.spec.ops import ArithmeticLayer, ReduceLayer, SliceLayer

    rng = np.random.default_rng(5)
    gamma = rng.standard_normal((4, 1, 1)).astype("float32")
    six = np.array(6.0, "float32")
    w, b = rng.standard_normal((3, 2)).astype("float32"), rng.standard_normal(3).astype("float32")
    base = _torch(_nn().Sequential(_nn().Conv2d(2, 4, 3)), (2, 7, 6))
    return _then(
        base,
        ArithmeticLayer(name="scale", op="multiply", learned=True, constant=tensor_ref("scale.constant", gamma)),
        ArithmeticLayer(name="div", op="divide", constant=tensor_ref("div.constant", six)),
        SliceLayer(name="pick", axis=1, start=1, stop=3),
        ReduceLayer(name="pool", op="mean", axes=(2, 3), input_rank=4),
        DenseLayer(name="head", units=3, in_features=2, weight=tensor_ref("head.weight", w),
                   bias=tensor_ref("head.bias", b)),
        arrays={"scale.constant": gamma, "div.constant": six, "head.weight": w, "head.bias": b},
    )


def _ops_on_sequence() -> weightio.Archive:
    """Plain sequence data: a class token joined in front, a position table added, the max over
    features kept, a float16 round trip, a reversed subtraction."""
    from weightio.format.archive import tensor_ref
    from weightio.spec.merge import ConcatenateLayer
    from weightio.spec.ops import ArithmeticLayer, CastLayer, ParameterLayer, ReduceLayer

    rng = np.random.default_rng(6)
    base = _torch(_nn().Sequential(_nn().Linear(3, 4)), (5, 3))
    token = rng.standard_normal((1, 4)).astype("float32")
    table = rng.standard_normal((6, 4)).astype("float32")
    one = np.array(1.0, "float32")
    dense = base.spec.layers[-1].name
    return _then(
        base,
        ParameterLayer(name="token", value=tensor_ref("token.value", token), inputs=[dense]),
        ConcatenateLayer(name="joined", axis=1, inputs=["token", dense]),
        ArithmeticLayer(name="positions", op="add", learned=True, constant=tensor_ref("positions.constant", table)),
        ReduceLayer(name="peak", op="max", axes=(-1,), keepdims=True),
        CastLayer(name="half", dtype="F16"),
        CastLayer(name="single", dtype="F32"),
        ArithmeticLayer(name="flip", op="subtract", constant_first=True, constant=tensor_ref("flip.constant", one)),
        arrays={"token.value": token, "positions.constant": table, "flip.constant": one},
    )


def _merge(op: str) -> Callable[[], weightio.Archive]:
    def build() -> weightio.Archive:
        L = _L()
        return _keras_graph([(4,)], lambda x: getattr(L, op)()([L.Dense(6, activation="tanh")(x), L.Dense(6)(x)]))

    return build


def _residual(op: str) -> weightio.Archive:
    L = _L()

    def body(x: Any) -> Any:
        y = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(x))
        y = getattr(L, op)()([x, L.Conv2D(4, 3, padding="same")(L.ReLU()(y))])
        return L.Dense(3)(L.GlobalAveragePooling2D()(L.ReLU()(y)))

    return _keras_graph([(6, 5, 4)], body)


SAMPLES: dict[str, dict[str, Callable[[], weightio.Archive]]] = {
    "dense": {
        "relu_chain": lambda: _keras((6,), _L().Dense(5, activation="relu"), _L().Dense(3)),
        "leaky_standalone": lambda: with_activation(
            _keras((6,), _L().Dense(5, name="d")), "d", ActivationFn(name="leaky_relu", negative_slope=0.05)),
        "bfloat16": lambda: _keras((4,), _L().Dense(3, activation="relu", dtype="bfloat16"), dtype="bfloat16"),
        "float64": lambda: _keras((4,), _L().Dense(3, activation="tanh", dtype="float64"), dtype="float64"),
        "on_feature_map": lambda: _torch(_t("DenseOnMap"), (2, 3, 4)),
    },
    "activation": {
        "torch_mix": lambda: _torch(_nn().Sequential(
            _nn().Linear(4, 6), _nn().ReLU(), _nn().Linear(6, 6), _nn().ELU(0.5), _nn().Linear(6, 5),
            _nn().LeakyReLU(0.1), _nn().Softmax(dim=-1)), (4,)),
        "softmax_axis": lambda: _keras((3, 4), _L().Dense(4), _L().Softmax(axis=1)),
    },
    "dropout": {"between_dense": lambda: _keras((5,), _L().Dense(4), _L().Dropout(0.3), _L().Dense(2))},
    "identity": {"between_dense": lambda: _keras((5,), _L().Dense(4), _L().Identity(), _L().Dense(2))},
    "affine": {"standard_scaler": _scaled_regression},
    "rescaling": {
        "scalar_image": lambda: _keras((6, 6, 3), _L().Rescaling(1 / 255.0, offset=-0.5), _L().Conv2D(4, 3)),
        "per_channel_image": lambda: _keras(
            (6, 6, 3), _L().Rescaling([0.5, 2.0, -3.0], offset=[0.1, -0.2, 0.3]), _L().Conv2D(4, 3)),
        "scalar_features": lambda: _keras((5,), _L().Rescaling(0.5, offset=0.25), _L().Dense(3)),
    },
    "binary_proba": {"logistic": _binary_logistic},
    "arithmetic": {"on_map": _ops_on_map, "on_sequence": _ops_on_sequence},
    "reduce": {"on_map": _ops_on_map, "on_sequence": _ops_on_sequence},
    "slice": {"on_map": _ops_on_map},
    "parameter": {"on_sequence": _ops_on_sequence},
    "cast": {"on_sequence": _ops_on_sequence},
    "opaque": {"prelu": lambda: _keras((4,), _L().Dense(4), _L().PReLU(name="prelu"))},
    "conv": {
        "torch_cnn": lambda: _torch(torch_cnn(), (1, 8, 8)),
        "same_stride2_relu": lambda: _keras((9, 7, 3), _L().Conv2D(4, 3, strides=2, padding="same", activation="relu")),
        "strided_dilated": lambda: _torch(_nn().Sequential(_nn().Conv1d(3, 4, 3, stride=2, dilation=2)), (3, 15)),
        "explicit_padding": lambda: _torch(_nn().Sequential(
            _nn().Conv2d(2, 3, (3, 2), padding=(1, 0), stride=(2, 1))), (2, 7, 6)),
        "depthwise": lambda: _keras((8, 8, 3), _L().DepthwiseConv2D(3, depth_multiplier=2, padding="same")),
        "grouped": lambda: _torch(_nn().Sequential(_nn().Conv2d(4, 6, 3, groups=2)), (4, 6, 6)),
        "conv3d": lambda: _keras((6, 7, 5, 2), _L().Conv3D(3, 3, strides=2, padding="same")),
        "elu_standalone": lambda: with_activation(
            _keras((6, 6, 2), _L().Conv2D(3, 3, name="c")), "c", ActivationFn(name="elu", alpha=0.5)),
    },
    "separable_conv": {
        "2d_tanh": lambda: _keras((8, 8, 3), _L().SeparableConv2D(5, 3, depth_multiplier=2, activation="tanh")),
        "1d_same": lambda: _keras((9, 3), _L().SeparableConv1D(4, 3, padding="same")),
    },
    "conv_transpose": {
        "keras_same": lambda: _keras((5, 4, 3), _L().Conv2DTranspose(4, 3, strides=2, padding="same")),
        "torch_output_padding": lambda: _torch(_nn().Sequential(
            _nn().ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)), (3, 5, 5)),
        "torch_extra_crop": lambda: _torch(_nn().Sequential(_nn().ConvTranspose2d(2, 3, 3, padding=2)), (2, 6, 6)),
    },
    "pool": {
        "max_same_odd": lambda: _keras((7, 7, 3), _L().MaxPooling2D(2, padding="same")),
        "avg1d_same": lambda: _keras((9, 3), _L().AveragePooling1D(2, padding="same")),
        "torch_avg_padded": lambda: _torch(_nn().Sequential(_nn().AvgPool2d(3, stride=2, padding=1)), (2, 6, 6)),
        # resnet's stem pooling (-inf padding: a Pad operation before the Keras pooling), and
        # ceil_mode's partial window as one more -inf pad after the input.
        "torch_max_padded": lambda: _torch(_nn().Sequential(_nn().MaxPool2d(3, 2, padding=1)), (2, 6, 6)),
        "torch_max_ceil": lambda: _torch(_nn().Sequential(
            _nn().MaxPool2d(3, 2, padding=1, ceil_mode=True)), (2, 8, 8)),
    },
    "global_pool": {
        "avg2d": lambda: _keras((6, 6, 3), _L().GlobalAveragePooling2D()),
        "max1d_keepdims": lambda: _keras((6, 3), _L().GlobalMaxPooling1D(keepdims=True)),
        "torch_adaptive": lambda: _torch(_nn().Sequential(_nn().AdaptiveAvgPool2d(1), _nn().Flatten()), (3, 5, 5)),
    },
    "zero_padding": {
        "pad2d": lambda: _keras((5, 5, 2), _L().ZeroPadding2D(((1, 0), (2, 1)))),
        "crop2d": lambda: _keras((6, 6, 2), _L().Cropping2D(((1, 0), (2, 1)))),
        "torch_pad": lambda: _torch(_nn().Sequential(_nn().ZeroPad2d((1, 2, 0, 1))), (2, 4, 4)),
        "pad1d": lambda: _keras((6, 3), _L().ZeroPadding1D((1, 2))),
    },
    "upsampling": {
        "1d": lambda: _keras((5, 2), _L().UpSampling1D(3)),
        "2d": lambda: _keras((4, 3, 2), _L().UpSampling2D((2, 3))),
        "3d": lambda: _keras((2, 3, 2, 2), _L().UpSampling3D((2, 1, 2))),
    },
    "flatten": {
        "keras_dense": lambda: _keras((5, 4, 3), _L().Conv2D(4, 3), _L().Flatten(), _L().Dense(6)),
        "torch_refold": lambda: _torch(_nn().Sequential(
            _nn().Conv2d(3, 4, 3), _nn().Flatten(), _nn().Linear(16, 5)), (3, 4, 4)),
        "torch_alone": lambda: _torch(_nn().Sequential(_nn().Conv2d(3, 3, 2), _nn().Flatten()), (3, 4, 3)),
    },
    "reshape": {
        "to_map": lambda: _keras((24,), _L().Reshape((4, 3, 2)), _L().Conv2D(3, 2)),
        "from_map": lambda: _keras((5, 4, 2), _L().Conv2D(3, 2), _L().Reshape((4, 9)), _L().Dense(2)),
        "torch_unflatten": lambda: _torch(_nn().Sequential(
            _nn().Unflatten(1, (3, 2, 2)), _nn().Conv2d(3, 2, 1)), (12,)),
    },
    "permute": {
        "map": lambda: _keras((5, 4, 3), _L().Permute((2, 1, 3)), _L().Conv2D(2, 2)),
        "plain": lambda: _keras((5, 4), _L().Permute((2, 1)), _L().Dense(3)),
    },
    "batch_norm": {
        "features": lambda: _keras((5,), _L().BatchNormalization(epsilon=0.25, momentum=0.9)),
        "no_center": lambda: _keras((5,), _L().BatchNormalization(center=False)),
        "channels_first_1d": lambda: _keras((3, 6), _L().BatchNormalization(axis=1)),
        "torch_map": lambda: _torch(torch_cnn(), (1, 8, 8)),
    },
    "layer_norm": {
        "last_axis": lambda: _keras((4, 6), _L().LayerNormalization()),
        "two_axes": lambda: _keras((4, 6), _L().LayerNormalization(axis=[-2, -1], epsilon=1e-5)),
        "torch_no_bias": lambda: _torch(_nn().Sequential(_nn().LayerNorm(6, bias=False)), (6,)),
    },
    "group_norm": {
        "features": lambda: _keras((6,), _L().GroupNormalization(groups=2)),
        "torch_channels_first": lambda: _torch(_nn().Sequential(_nn().GroupNorm(3, 6)), (6, 5)),
        "feature_map": lambda: _keras((5, 4, 3), _L().Conv2D(6, 3, padding="same"),
                                      _L().GroupNormalization(groups=3), _L().Conv2D(2, 1)),
    },
    "normalization": {
        "mean_variance": lambda: _keras((4,), _L().Normalization(
            mean=[1.0, -2.0, 0.5, 3.0], variance=[2.0, 0.5, 1.0, 4.0]), _L().Dense(2)),
    },
    "embedding": {
        "keras": lambda: _keras((7,), _L().Embedding(13, 5), _L().GRU(4), dtype="int32"),
        "torch_text": lambda: _torch(_t("Text"), (7,), dtype="int64"),
    },
    "simple_rnn": {
        "last": lambda: _keras((6, 3), _L().SimpleRNN(5)),
        "relu_sequences": lambda: _keras((6, 3), _L().SimpleRNN(5, activation="relu", return_sequences=True)),
        "bidirectional": lambda: _keras((6, 3), _L().Bidirectional(_L().SimpleRNN(4))),
        "torch_stacked_bidirectional": lambda: _torch(_t("Recurrent", _nn().RNN(
            3, 4, bidirectional=True, num_layers=2, batch_first=True), "sequence"), (6, 3)),
    },
    "lstm": {
        "no_bias_sequences": lambda: _keras((6, 3), _L().LSTM(5, return_sequences=True, use_bias=False)),
        "bidirectional_sequences": lambda: _keras((6, 3), _L().Bidirectional(_L().LSTM(4, return_sequences=True))),
        "torch_stacked_two_biases": lambda: _torch(_t("Recurrent", _nn().LSTM(
            3, 5, num_layers=2, batch_first=True), "sequence"), (6, 3)),
    },
    "gru": {
        "sequences": lambda: _keras((6, 3), _L().GRU(5, return_sequences=True)),
        "bidirectional_last": lambda: _keras((6, 3), _L().Bidirectional(_L().GRU(4))),
        "torch_last_step": lambda: _torch(_t("Recurrent", _nn().GRU(3, 5, batch_first=True), "last"), (6, 3)),
    },
    "add": {"plain": _merge("Add"), "residual_maps": lambda: _residual("Add")},
    "subtract": {"plain": _merge("Subtract")},
    "multiply": {"plain": _merge("Multiply"), "residual_maps": lambda: _residual("Multiply")},
    "average": {"plain": _merge("Average")},
    "maximum": {"plain": _merge("Maximum")},
    "minimum": {"plain": _merge("Minimum")},
    "concatenate": {
        "plain": _merge("Concatenate"),
        "torch_channels": lambda: _torch(_t("Branches"), (3, 5, 6)),
        "two_inputs": lambda: _keras_graph(
            [(3,), (2,)], lambda a, b: _L().Dense(2)(_L().Concatenate()([_L().Dense(4)(a), b]))),
    },
    "last_step": {
        "keras_lstm": lambda: _keras_graph(
            [(6, 3)], lambda x: _L().Dense(2)(_L().LSTM(4, return_sequences=True)(x)[:, -1])),
        "torch_text": lambda: _torch(_t("Text"), (7,), dtype="int64"),
    },
    "multi_head_attention": {
        "keras": lambda: _keras_graph([(5, 8)], lambda x: _L().MultiHeadAttention(2, 4)(x, x)),
        "torch_no_bias": lambda: _torch(_t("SelfAttention", False), (5, 8)),
    },
}
