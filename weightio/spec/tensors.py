"""References from the spec to the tensors stored beside it."""

from __future__ import annotations

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

    @model_validator(mode="after")
    def _one_digest(self) -> TensorRef:
        if self.digest is not None and self.sha256 is not None:
            raise ValueError("a tensor records one digest: 'digest' or the format 1.0 'sha256', not both")
        return self

    def recorded_digest(self) -> str | None:
        """The recorded digest as ``"<algorithm>:<hex>"`` (a format 1.0 ``sha256`` included)."""
        if self.digest is not None:
            return self.digest
        return None if self.sha256 is None else f"sha256:{self.sha256}"

    def describe(self) -> str:
        """Return a short human form: ``F32[64, 10]``."""
        return f"{self.dtype}{list(self.shape)}"
