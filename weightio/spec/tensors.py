"""References from the spec to the tensors stored beside it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from weightio.dtypes import DTypeName


class SpecModel(BaseModel):
    """Base of every spec model: strict about unknown fields, immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorRef(SpecModel):
    """Where a layer's parameter lives in the archive and what it must look like.

    The shape is in weightio's canonical layout (docs/conventions.md), not the source
    framework's. ``sha256`` is filled in when the archive is written, so ``verify`` can prove the
    bytes are the ones that were archived.
    """

    key: str = Field(min_length=1, description="Tensor name in the safetensors file: '<layer>.<param>'.")
    shape: tuple[int, ...] = Field(description="Shape in the canonical layout.")
    dtype: DTypeName = Field(description="safetensors dtype name, e.g. 'F32', 'BF16'.")
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Hex sha256 of the tensor's bytes as stored (little-endian, C order).",
    )

    def describe(self) -> str:
        """Return a short human form: ``F32[64, 10]``."""
        return f"{self.dtype}{list(self.shape)}"
