"""The layer spec: pydantic models describing a model in canonical, framework-neutral form.

Depends on nothing but pydantic and numpy, so every adapter and tool can share it.
"""

from __future__ import annotations

from weightio.spec.activations import ACTIVATION_PARAMETERS, LINEAR, ActivationFn, ActivationName
from weightio.spec.attention import MultiHeadAttentionLayer
from weightio.spec.base import LayerBase
from weightio.spec.conv import (
    ConvLayer,
    ConvTransposeLayer,
    FlattenLayer,
    GlobalPoolLayer,
    PermuteLayer,
    PoolLayer,
    ReshapeLayer,
    SeparableConvLayer,
    UpSamplingLayer,
    ZeroPaddingLayer,
)
from weightio.spec.core import (
    ActivationLayer,
    AffineLayer,
    BinaryProbaLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    OpaqueLayer,
)
from weightio.spec.layers import LAYER_KINDS, Layer
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer
from weightio.spec.model import (
    FORMAT_VERSION,
    InputSpec,
    ModelSpec,
    OutputCheck,
    OutputRole,
    OutputSpec,
    Provenance,
    VerificationRecord,
)
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer, NormalizationLayer
from weightio.spec.recurrent import EmbeddingLayer, GRULayer, LSTMLayer, SimpleRNNLayer
from weightio.spec.serialization import json_schema, spec_from_data, spec_from_json
from weightio.spec.tensors import TensorRef

__all__ = [
    "BatchNormLayer",
    "ConcatenateLayer",
    "EmbeddingLayer",
    "GRULayer",
    "GroupNormLayer",
    "LSTMLayer",
    "LastStepLayer",
    "LayerNormLayer",
    "MergeLayer",
    "MultiHeadAttentionLayer",
    "NormalizationLayer",
    "SimpleRNNLayer",
    "ACTIVATION_PARAMETERS",
    "FORMAT_VERSION",
    "LAYER_KINDS",
    "LINEAR",
    "ActivationFn",
    "ActivationLayer",
    "ActivationName",
    "AffineLayer",
    "BinaryProbaLayer",
    "ConvLayer",
    "ConvTransposeLayer",
    "FlattenLayer",
    "GlobalPoolLayer",
    "PermuteLayer",
    "PoolLayer",
    "ReshapeLayer",
    "SeparableConvLayer",
    "UpSamplingLayer",
    "ZeroPaddingLayer",
    "DenseLayer",
    "DropoutLayer",
    "IdentityLayer",
    "InputSpec",
    "Layer",
    "LayerBase",
    "ModelSpec",
    "OpaqueLayer",
    "OutputCheck",
    "OutputRole",
    "OutputSpec",
    "Provenance",
    "TensorRef",
    "VerificationRecord",
    "json_schema",
    "spec_from_json",
    "spec_from_data",
]
