"""Checks on a Keras config read from a file, before any of it is mapped.

Keras layers may name files to read at build time: ``StringLookup``/``IntegerLookup``/
``TextVectorization`` take ``vocabulary`` (and ``idf_weights``) as a path, which Keras opens with
``tf.io.gfile`` — a local file such as ``/etc/hostname`` or a URL. A file downloaded from a stranger
must not make weightio (or the Keras model it writes) read anything outside it, so a string there
is refused with ``ExternalReferenceError``; an inline list is data and stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightio.errors import ExternalReferenceError
from weightio.spec.json_limits import check_json_limits

#: Layer config fields Keras treats as a path when they hold a string.
FILE_FIELDS = ("vocabulary", "idf_weights")


def check_config(data: Any, *, file: Path, what: str) -> None:
    """Bound the config's nesting and strings, and refuse layer fields that name a file."""
    check_json_limits(data, file=file, what=what)
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            config = value.get("config")
            if "class_name" in value and isinstance(config, dict):
                for field in FILE_FIELDS:
                    if isinstance(config.get(field), str):
                        raise ExternalReferenceError(
                            f"{value.get('class_name')} field {field!r} names a file or URL "
                            f"({config[field][:200]!r}); weightio reads nothing outside the model "
                            "file. Re-save the model with the vocabulary inline (a list)",
                            file=file,
                            layer=str(config.get("name") or ""),
                        )
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


# -- the allowlist of Keras' own classes ------------------------------------------------------
#
# A serialized Keras object is a dict with ``class_name`` (and in Keras 3 ``module`` and
# ``registered_name``). Keras' loader resolves it by importing ``module`` (any ``keras*``
# package), by the custom-object registry (``registered_name``), or by the bare class name among
# its built-ins. Before Keras sees a config from a file (verification loads the file through
# Keras), every such dict must name one of Keras' own layers, initializers, regularizers,
# constraints, activations, dtype policies or model classes; the TF-free reader maps a layer
# only when it (and any layer it wraps) passes the same check, and keeps it opaque (named)
# otherwise.
# Code-carrying layers (Lambda, TFSMLayer, JaxLayer, FlaxLayer, TorchModuleWrapper) and abstract
# bases are not on the list. ``tests/frameworks/keras`` checks each name against Keras.

KERAS_LAYERS = frozenset({
    "Activation", "ActivityRegularization", "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D",
    "AdaptiveAveragePooling3D", "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D",
    "AdaptiveMaxPooling3D", "Add", "AdditiveAttention", "AlphaDropout", "Attention", "AugMix",
    "AutoContrast", "Average", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "AvgPool1D", "AvgPool2D", "AvgPool3D", "BatchNormalization", "Bidirectional",
    "CategoryEncoding", "CenterCrop", "Concatenate", "ContrastLimitedAdaptiveHistogramEqualization",
    "Conv1D", "Conv1DTranspose", "Conv2D", "Conv2DTranspose", "Conv3D", "Conv3DTranspose",
    "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "Convolution1D", "Convolution1DTranspose",
    "Convolution2D", "Convolution2DTranspose", "Convolution3D", "Convolution3DTranspose",
    "Cropping1D", "Cropping2D", "Cropping3D", "CutMix", "Dense", "DepthwiseConv1D",
    "DepthwiseConv2D", "Discretization", "Dot", "Dropout", "ELU", "EinsumDense", "Embedding",
    "Equalization", "Flatten", "GRU", "GRUCell", "GaussianDropout", "GaussianNoise",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D", "GlobalMaxPool1D", "GlobalMaxPool2D",
    "GlobalMaxPool3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GroupNormalization", "GroupQueryAttention", "HashedCrossing", "Hashing", "Identity",
    "InputLayer", "IntegerLookup", "LSTM", "LSTMCell", "LayerNormalization", "LeakyReLU",
    "Masking", "MaxNumBoundingBoxes", "MaxPool1D", "MaxPool2D", "MaxPool3D", "MaxPooling1D",
    "MaxPooling2D", "MaxPooling3D", "Maximum", "MelSpectrogram", "Minimum", "MixUp",
    "MultiHeadAttention", "Multiply", "Normalization", "PReLU", "Permute", "Pipeline",
    "RMSNormalization", "RNN", "RandAugment", "RandomBrightness", "RandomColorDegeneration",
    "RandomColorJitter", "RandomContrast", "RandomCrop", "RandomElasticTransform",
    "RandomErasing", "RandomFlip", "RandomGaussianBlur", "RandomGrayscale", "RandomHue",
    "RandomInvert", "RandomPerspective", "RandomPosterization", "RandomRotation",
    "RandomSaturation", "RandomSharpness", "RandomShear", "RandomTranslation", "RandomZoom",
    "ReLU", "RepeatVector", "Rescaling", "Reshape", "Resizing", "ReversibleEmbedding",
    "STFTSpectrogram", "SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D",
    "SeparableConvolution2D", "SimpleRNN", "SimpleRNNCell", "Softmax", "Solarization",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "SpectralNormalization",
    "StackedRNNCells", "StringLookup", "Subtract", "TextVectorization", "TimeDistributed",
    "UnitNormalization", "UpSampling1D", "UpSampling2D", "UpSampling3D", "ZeroPadding1D",
    "ZeroPadding2D", "ZeroPadding3D",
})
KERAS_INITIALIZERS = frozenset({
    "Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "Identity",
    "IdentityInitializer", "LecunNormal", "LecunUniform", "Ones", "Orthogonal",
    "OrthogonalInitializer", "RandomNormal", "RandomUniform", "STFT", "STFTInitializer",
    "TruncatedNormal", "VarianceScaling", "Zeros",
})
KERAS_REGULARIZERS = frozenset({"L1", "L1L2", "L2", "OrthogonalRegularizer"})
KERAS_CONSTRAINTS = frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"})
KERAS_ACTIVATIONS = frozenset({
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign",
    "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh", "tanh_shrink",
    "threshold",
})
KERAS_DTYPE_POLICIES = frozenset({
    "DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy", "QuantizedFloat8DTypePolicy",
    "Int4DTypePolicy", "GPTQDTypePolicy", "AWQDTypePolicy", "DTypePolicyMap",
})
KERAS_MODELS = frozenset({"Sequential", "Functional", "Model"})

#: Keras' own operations (``keras.ops.*`` in a Functional model serialize as these), except
#: those that take a function (``Map``, ``Scan``, ``Cond``, ``WhileLoop``, ``JVP``…).
KERAS_OPS: dict[str, frozenset[str]] = {
    "keras.src.ops.numpy": frozenset("""
        Abs Absolute Add All AllClose Amax Amin Angle Any Append Arange Arccos Arccosh Arcsin
        Arcsinh Arctan Arctan2 Arctanh Argmax Argmin Argpartition Argsort Array ArraySplit Average
        Bincount BitwiseAnd BitwiseInvert BitwiseLeftShift BitwiseNot BitwiseOr BitwiseRightShift
        BitwiseXor BroadcastTo Cbrt Ceil Clip Concatenate Conj Conjugate Copy Corrcoef Correlate Cos
        Cosh CountNonzero Cross Cumprod Cumsum Deg2rad Diag Diagflat Diagonal Diff Digitize Divide
        DivideNoNan Dot Dsplit Dstack Einsum EmptyLike Equal Exp Exp2 ExpandDims Expm1 Fabs Flip
        Fliplr Flipud Floor FloorDivide Fmax Fmin Fmod Full FullLike Gcd Geomspace GetItem Greater
        GreaterEqual Heaviside Histogram Hsplit Hstack Hypot I0 Imag Inner IsIn Isclose Isfinite
        Isinf Isnan Isneginf Isposinf Isreal Kron Lcm Ldexp LeftShift Less LessEqual Linspace Log
        Log10 Log1p Log2 Logaddexp Logaddexp2 LogicalAnd LogicalNot LogicalOr LogicalXor Logspace
        Matmul Max Maximum Mean Median Meshgrid Min Minimum Mod Moveaxis Multiply NanToNum Nanargmax
        Nanargmin Nancumprod Nancumsum Nanmax Nanmean Nanmedian Nanmin Nanpercentile Nanprod
        Nanquantile Nanstd Nansum Nanvar Ndim Negative Nextafter Nonzero NotEqual OnesLike Outer Pad
        Percentile Power Prod Ptp Quantile Rad2deg Ravel Real Reciprocal Repeat Reshape RightShift
        Roll Rot90 Round SearchSorted Select Sign Signbit Sin Sinc Sinh Size Slogdet Sort Split Sqrt
        Square Squeeze Stack Std Subtract Sum Swapaxes Take TakeAlongAxis Tan Tanh Tensordot Tile
        Trace Transpose Trapezoid Tril Triu TrueDivide Trunc Unique UnravelIndex Vander Var Vdot
        View Vsplit Vstack Where ZerosLike
    """.split()),
    "keras.src.ops.nn": frozenset("""
        AdaptiveAveragePool AdaptiveMaxPool AveragePool BatchNorm BinaryCrossentropy CTCDecode
        CTCLoss CategoricalCrossentropy Celu Conv ConvTranspose DepthToSpace DepthwiseConv
        DotProductAttention Elu Fold Gelu Glu HardShrink HardSigmoid HardSilu HardTanh LayerNorm
        LeakyRelu LogSigmoid LogSoftmax MaxPool Moments MultiHot Normalize OneHot PSNR Polar RMSNorm
        Relu Relu6 Selu SeparableConv Sigmoid Silu SoftShrink Softmax Softplus Softsign SpaceToDepth
        SparseCategoricalCrossentropy SparsePlus SparseSigmoid Sparsemax Squareplus TanhShrink
        Threshold Unfold
    """.split()),
    "keras.src.ops.math": frozenset("""
        CDist Erf Erfc Erfinv ExtractSequences FFT FFT2 IFFT2 IRFFT ISTFT InTopK Logdet Logsumexp
        RFFT Rsqrt STFT SegmentMax SegmentMin SegmentProd SegmentReduction SegmentSum TopK
        ViewAsComplex ViewAsReal
    """.split()),
    "keras.src.ops.linalg": frozenset("""
        Cholesky CholeskyInverse Det Eig Eigh Inv Lstsq LuFactor MatrixRank Norm Pinv Qr SVD Solve
        SolveTriangular
    """.split()),
    "keras.src.ops.image": frozenset("""
        AffineTransform CropImages ElasticTransform ExtractPatches GaussianBlur HSVToRGB
        MapCoordinates PadImages PerspectiveTransform RGBToGrayscale RGBToHSV Resize SSIM
        ScaleAndTranslate SobelEdges
    """.split()),
    "keras.src.ops.core": frozenset("""
        Cast ConvertToTensor SaturateCast Scatter ScatterUpdate Slice SliceUpdate StopGradient
        Unstack
    """.split()),
}


#: Which classes each ``module`` Keras writes may name.
_BY_MODULE: dict[str, frozenset[str]] = {
    **KERAS_OPS,
    "keras.layers": KERAS_LAYERS,
    "keras.initializers": KERAS_INITIALIZERS,
    "keras.regularizers": KERAS_REGULARIZERS,
    "keras.constraints": KERAS_CONSTRAINTS,
    "keras.dtype_policies": KERAS_DTYPE_POLICIES,
    "keras": KERAS_MODELS | KERAS_DTYPE_POLICIES,
    "keras.models": KERAS_MODELS,
    "keras.src.models.functional": frozenset({"Functional"}),
    "keras.src.models.sequential": frozenset({"Sequential"}),
    "keras.src.models.model": frozenset({"Model"}),
    # keras.applications' own layers that weightio maps (ConvNeXt's; Keras imports its module)
    "keras.src.applications.convnext": frozenset({"LayerScale", "StochasticDepth"}),
}
#: Modules a serialized built-in function (``class_name: "function"``) may name.
_FUNCTION_MODULES = frozenset(
    {"keras.activations", "keras.src.activations", "keras.src.activations.activations", "builtins"}
)
#: Keras's own serialized values: data, not classes (``__lambda__`` and ``__typespec__`` are not).
_DATA_CLASSES = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)
#: Serialized objects that are not layers (their config's ``name`` is not a layer name).
_NOT_LAYERS = (KERAS_INITIALIZERS | KERAS_REGULARIZERS | KERAS_CONSTRAINTS | KERAS_DTYPE_POLICIES
               | _DATA_CLASSES | {"function"})
#: Bare class names (Keras 2 configs carry no ``module``): resolved among Keras' built-ins.
_BARE = frozenset().union(*(names for module, names in _BY_MODULE.items()
                             if not module.startswith("keras.src.applications")))


def foreign_object(value: Any) -> str | None:
    """Why Keras must not deserialize the serialized object ``value`` (None: it is Keras' own)."""
    class_name = value.get("class_name")
    module = value.get("module")
    registered = value.get("registered_name")
    if not isinstance(class_name, str):
        return f"a serialized object with class_name {str(class_name)[:60]!r}"
    named = f"{module}.{class_name}" if isinstance(module, str) else class_name
    if class_name in _DATA_CLASSES:
        return None if module is None else f"{named[:120]!r} (Keras data carries no module)"
    if class_name == "function":
        fn = value.get("config")
        if module in _FUNCTION_MODULES and fn in KERAS_ACTIVATIONS and registered in (None, fn):
            return None
        return f"the function {str(module)[:60]}.{str(fn)[:60]} (not one of Keras' activations)"
    if module is None:
        allowed = class_name in _BARE
    else:
        allowed = isinstance(module, str) and class_name in _BY_MODULE.get(module, ())
    if allowed and registered in (None, class_name):
        return None
    if allowed:
        return f"{named[:120]!r} registered as {str(registered)[:60]!r} (a custom object)"
    return (f"{named[:120]!r}, which is not on the allowlist of Keras' own classes (custom "
            "classes, other modules and code-carrying layers such as Lambda are not)")


#: Config fields of wrappers and containers that hold serialized layers.
_INNER_LAYERS = ("layer", "backward_layer", "forward_layer", "cell", "cells", "layers")


def foreign_layer(layer: Any) -> str | None:
    """Why a serialized layer is not Keras' own: the layer, or a layer it wraps (a
    Bidirectional's, a TimeDistributed's, an RNN's cell, a nested model's layers) names a class
    outside the allowlist. Initializers and constraints do not change what a layer computes and
    are left to ``check_keras_objects``; activations are checked where they are mapped.
    """
    stack = [layer]
    while stack:
        item = stack.pop()
        if not isinstance(item, dict):
            continue
        reason = foreign_object(item)
        if reason is not None:
            return reason
        inner = item.get("config")
        if isinstance(inner, dict):
            for key in _INNER_LAYERS:
                value = inner.get(key)
                stack.extend(value if isinstance(value, list) else [value])
    return None


def check_keras_objects(config: Any, *, file: object) -> None:
    """Refuse a model config that names anything but Keras' own classes, before Keras sees it.

    Every serialized object is checked (``module``, ``class_name``, ``registered_name``), in the
    model and in every layer, wrapper, cell, initializer, regularizer, constraint, activation and
    dtype policy. ``compile_config`` is not: loading with ``compile=False`` sets it to None before
    anything in it is deserialized.

    Raises:
        UnsafeFormatError: naming each offending object and the layer holding it.
    """
    from weightio.errors import UnsafeFormatError

    found: list[str] = []
    stack: list[tuple[Any, str | None]] = [
        ({k: v for k, v in config.items() if k != "compile_config"}, None)
    ] if isinstance(config, dict) else [(config, None)]
    while stack and len(found) < 5:
        item, layer = stack.pop()
        if isinstance(item, dict):
            inner = item.get("config")
            if "class_name" in item:
                here = inner.get("name") if isinstance(inner, dict) else None
                if isinstance(here, str) and item.get("class_name") not in _NOT_LAYERS:
                    layer = here
                reason = foreign_object(item)
                if reason is not None:
                    found.append(f"{reason} (in layer {layer!r})" if layer else reason)
            stack.extend((v, layer) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, layer) for v in item)
    if found:
        raise UnsafeFormatError(
            "the model config names " + "; ".join(found) + ". weightio lets Keras load only "
            "configs made of Keras' own layers, initializers, regularizers, constraints and "
            "activations (Keras would import the module or look the name up among custom "
            "objects); the TF-free reader keeps such a layer opaque. Rebuild the model from "
            "built-in layers and save it again",
            file=file,
        )
