"""Spec JSON in and out: validation that lists every problem, strict parsing, the JSON Schema."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from weightio.errors import SpecValidationError
from weightio.spec.json_limits import parse_json
from weightio.spec.model import FORMAT_VERSION, ModelSpec


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
    """Parse and validate spec JSON text read from a file.

    Strict twice over. The JSON itself: no duplicate key, NaN, Infinity or overflowing number,
    bounded depth and strings (``parse_json``). And its values: validated in pydantic's strict
    JSON mode, so a header that says ``"units": 4.0``, ``true`` or ``"4"`` where the schema
    wants an integer is refused rather than quietly coerced (weightio never writes those, so a
    file holding them was made by something else and may not mean what a lax reading says).
    Readers that build specs in memory go through ``spec_from_data``, which stays lax about
    Python types (a list for a tuple, a numpy integer for an int).
    """
    data = parse_json(text, file=file, what="the spec", error=SpecValidationError)
    try:
        return ModelSpec.model_validate_json(text, strict=True)
    except ValidationError as exc:
        message, layer = _validation_message(exc, data)
        raise SpecValidationError(f"invalid spec: {message}", file=file, layer=layer) from None


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of ``ModelSpec``: the contract for readers in other languages."""
    schema = ModelSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://weightio.dev/schema/{FORMAT_VERSION}/model-spec.json"
    return schema
