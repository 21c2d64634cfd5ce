"""The layer spec: pydantic models describing a model in canonical, framework-neutral form.

Depends on nothing but pydantic and numpy, so every adapter and tool can share it.
"""

# ruff: noqa: I001 - layers must be imported before the families that extend its union
from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from weightio.errors import SpecValidationError
from weightio.spec.activations import ACTIVATION_PARAMETERS, LINEAR, ActivationFn, ActivationName
from weightio.spec.layers import (
    LAYER_KINDS,
    ActivationLayer,
    AffineLayer,
    BinaryProbaLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    Layer,
    LayerBase,
    OpaqueLayer,
)
from weightio.spec.attention import MultiHeadAttentionLayer
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer, NormalizationLayer
from weightio.spec.recurrent import EmbeddingLayer, GRULayer, LSTMLayer, SimpleRNNLayer
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


def _validation_message(exc: ValidationError, data: Any) -> tuple[str, str | None]:
    """Turn pydantic's errors into one message listing every problem with its path.

    Also returns the name of the first layer involved, so the error can name it.
    """
    lines = []
    layer = None
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        path = ".".join(str(p) for p in loc) or "spec"
        lines.append(f"{path}: {err['msg']}")
        if layer is None and len(loc) >= 2 and loc[0] == "layers" and isinstance(loc[1], int):
            try:
                layer = str(data["layers"][loc[1]]["name"])
            except (KeyError, IndexError, TypeError):
                layer = f"layers[{loc[1]}]"
    return "; ".join(lines), layer


def spec_from_data(data: Any, *, file: object | None = None) -> ModelSpec:
    """Validate plain data into a ``ModelSpec``, raising ``SpecValidationError`` on any problem."""
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        message, layer = _validation_message(exc, data)
        raise SpecValidationError(f"invalid spec: {message}", file=file, layer=layer) from None


def spec_from_json(text: str, *, file: object | None = None) -> ModelSpec:
    """Parse and validate spec JSON text (strict JSON: no NaN/Infinity)."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise SpecValidationError(f"spec is not valid JSON ({exc})", file=file) from None
    from weightio.json_limits import check_json_limits

    check_json_limits(data, file=file)
    return spec_from_data(data, file=file)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a weightio spec")


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of ``ModelSpec``: the contract for readers in other languages."""
    schema = ModelSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://weightio.dev/schema/{FORMAT_VERSION}/model-spec.json"
    return schema
