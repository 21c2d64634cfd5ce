"""References from the spec to the tensors stored beside it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from weightio.spec.dtypes import DTypeName

#: The digest algorithms an archive may record, the default first (docs/format.md).
DIGEST_ALGORITHMS = ("blake3", "sha256")
#: A recorded digest: the algorithm, a colon, 64 lowercase hex digits (32 bytes).
DIGEST_PATTERN = r"^(blake3|sha256):[0-9a-f]{64}$"


class SpecModel(BaseModel):
    """Base of every spec model: strict about unknown fields, immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class TensorRef(SpecModel):
    """Where a layer's parameter lives in the archive and what it must look like.

    The shape is in weightio's canonical layout (docs/conventions.md), not the source
    framework's. ``digest`` is filled in when the archive is written, so ``verify`` can prove the
    bytes are the ones that were archived. Format 1.0 archives recorded a plain hex ``sha256``
    instead; it is still read and verified (``recorded_digest``), and never written.
    """

    key: str = Field(min_length=1, description="Tensor name in the safetensors file: '<layer>.<param>'.")
    shape: tuple[int, ...] = Field(description="Shape in the canonical layout.")
    dtype: DTypeName = Field(description="safetensors dtype name, e.g. 'F32', 'BF16'.")
    digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description=(
            "Digest of the tensor's bytes as stored (little-endian, C order), named by its "
            "algorithm: 'blake3:<hex>' (the default) or 'sha256:<hex>'."
        ),
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Format 1.0 only: hex sha256 of the tensor's bytes. Newer archives write 'digest'.",
    )

    encoding: TensorEncoding | None = Field(
        default=None,
        description=(
            "Format 1.2: the parameter is stored encoded: in fewer bits (quantised, scheme "
            "'linear') or (1.3) as a weight norm's direction and magnitude (scheme 'weight_norm'). "
            "The file's tensor under 'key' then holds the stored values in "
            "'encoding.stored_dtype' (its digest is of those bytes); 'dtype' and 'shape' are "
            "the decoded parameter's (docs/format.md)."
        ),
    )

    @model_validator(mode="after")
    def _one_digest(self) -> TensorRef:
        if self.digest is not None and self.sha256 is not None:
            raise ValueError("a tensor records one digest: 'digest' or the format 1.0 'sha256', not both")
        if self.encoding is not None:
            self.encoding.check(self)
        return self

    def stored_refs(self) -> list[TensorRef]:
        """The tensors the file holds for this parameter: itself (in its stored dtype, when
        encoded), then its encoding's scale and zero point.
        """
        if self.encoding is None:
            return [self]
        stored = self.model_copy(update={"dtype": self.encoding.stored_dtype, "encoding": None})
        extra = [self.encoding.scale] + ([self.encoding.zero_point] if self.encoding.zero_point else [])
        return [stored, *extra]

    def recorded_digest(self) -> str | None:
        """The recorded digest as ``"<algorithm>:<hex>"`` (a format 1.0 ``sha256`` included)."""
        if self.digest is not None:
            return self.digest
        return None if self.sha256 is None else f"sha256:{self.sha256}"

    def describe(self) -> str:
        """Return a short human form: ``F32[64, 10]``."""
        return f"{self.dtype}{list(self.shape)}"


#: Stored dtypes of encoded parameters: integers take a zero point, float8 does not.
INTEGER_STORED = ("I8", "U8")
FLOAT8_STORED = ("F8_E4M3", "F8_E5M2")
#: Stored dtypes of a weight norm's direction ``v`` (the parameter's own float dtype).
FLOAT_STORED = ("F16", "BF16", "F32", "F64")


class TensorEncoding(SpecModel):
    """How a float parameter is stored encoded (format 1.2; the ``weight_norm`` scheme 1.3;
    docs/format.md "Encoded parameters"). ``q`` is the file's tensor under the parameter's key.

    * ``linear`` (quantised): ``value = (float32(q) - float32(zero_point)) * scale``, computed
      in float32 with ``scale`` (and ``zero_point``) broadcast along ``axis``, then cast to the
      parameter's ``dtype``;
    * ``weight_norm`` (torch's weight norm, ``weightio.weight_norm``): ``q`` is the direction
      ``v`` and ``scale`` the magnitude ``g``, both in the parameter's dtype;
      ``value = g * v / ||v||``, the norm over every axis but ``axis`` (over all of ``v`` when
      ``axis`` is absent), computed in float64, then cast to ``dtype``.
    """

    scheme: Literal["linear", "weight_norm"] = Field(
        default="linear",
        description="'linear': (q - zero_point) * scale; 'weight_norm': scale * q / ||q||.",
    )
    stored_dtype: Literal["I8", "U8", "F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"]
    axis: int | None = Field(
        default=None, ge=0,
        description="None: one scale for the whole tensor; else the axis (0: output channels) "
        "along which 'scale' and 'zero_point' hold one value per index.",
    )
    scale: TensorRef = Field(
        description="shape [] (per tensor) or [shape[axis]]; F32 ('linear'), the parameter's "
        "dtype ('weight_norm': the magnitude g)."
    )
    zero_point: TensorRef | None = Field(
        default=None, description="Integer encodings: stored_dtype, scale's shape; absent means 0."
    )

    def check(self, ref: TensorRef) -> None:
        """Refuse an encoding that does not fit its parameter ``ref``."""
        if self.axis is not None and self.axis >= len(ref.shape):
            raise ValueError(f"encoding axis {self.axis} is out of range for shape {list(ref.shape)}")
        want = () if self.axis is None else (ref.shape[self.axis],)
        for name, part in (("scale", self.scale), ("zero_point", self.zero_point)):
            if part is None:
                continue
            if tuple(part.shape) != want or part.encoding is not None:
                raise ValueError(f"encoding {name} shape {list(part.shape)} disagrees with {list(want)}")
        if self.scheme == "weight_norm":
            if self.stored_dtype != ref.dtype or self.scale.dtype != ref.dtype or self.zero_point:
                raise ValueError(
                    f"a weight_norm encoding stores v and g in the parameter's dtype {ref.dtype} "
                    f"(got {self.stored_dtype}, {self.scale.dtype}) and has no zero point"
                )
        elif self.stored_dtype in FLOAT_STORED:
            raise ValueError(f"a linear encoding stores 8-bit values, not {self.stored_dtype}")
        elif self.scale.dtype != "F32":
            raise ValueError(f"encoding scale is {self.scale.dtype}; scales are F32")
        if self.zero_point is not None and (
            self.stored_dtype not in INTEGER_STORED or self.zero_point.dtype != self.stored_dtype
        ):
            raise ValueError(f"a zero point is {self.stored_dtype} and only integer encodings have one")
        if ref.dtype not in ("F16", "BF16", "F32", "F64"):
            raise ValueError(f"only float parameters are encoded; this one is {ref.dtype}")


TensorRef.model_rebuild()
