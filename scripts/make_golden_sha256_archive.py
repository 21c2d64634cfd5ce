"""Write ``tests/golden/dense-sha256-v1.0.safetensors``: a format 1.0 archive, digests in sha256.

Format 1.0 (before BLAKE3) recorded each tensor's plain hex sha256 under ``sha256`` and the source
file's under ``provenance.source_sha256``. This script writes such a file byte by byte with
``json``, ``struct`` and ``hashlib`` only, exactly as weightio 1.0 laid it out, so the committed
file stands for archives written before the format change and does not depend on weightio's
current writer. ``tests/format/test_golden.py`` checks that it still loads and verifies, and that
this script still writes the committed bytes.

    python scripts/make_golden_sha256_archive.py [OUT]
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "dense-sha256-v1.0.safetensors"


def golden_bytes() -> bytes:
    """The whole file: a Dense(4 -> 3) layer, float32, values exactly representable."""
    weight = [(i - 6) / 8 for i in range(12)]  # [3, 4]
    bias = [0.5, -0.25, 1.0]
    w_bytes = struct.pack("<12f", *weight)
    b_bytes = struct.pack("<3f", *bias)
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    spec = {
        "format_version": "1.0",
        "name": "golden",
        "provenance": {
            "source_framework": "torch",
            "source_file": "golden.pt",
            "source_sha256": sha(b"golden source file"),
            "weightio_version": "0.1.0",
            "created_at": "2026-01-01T00:00:00+00:00",
            "transforms": [],
        },
        "weights_only": False,
        "inputs": [{"name": "x", "shape": [4], "dtype": "F32", "layout": "features_last"}],
        "layers": [
            {
                "kind": "dense", "name": "fc", "units": 3, "in_features": 4, "use_bias": True,
                "activation": {"name": "linear"},
                "weight": {"key": "fc.weight", "shape": [3, 4], "dtype": "F32", "sha256": sha(w_bytes)},
                "bias": {"key": "fc.bias", "shape": [3], "dtype": "F32", "sha256": sha(b_bytes)},
            }
        ],
        "outputs": [{"name": "y", "layer": "fc"}],
        "verification": [],
        "extra": {},
    }
    header = {
        "__metadata__": {
            "weightio.format_version": "1.0",
            "weightio.spec": json.dumps(spec, separators=(",", ":")),
        },
        "fc.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, len(w_bytes)]},
        "fc.bias": {"dtype": "F32", "shape": [3], "data_offsets": [len(w_bytes), len(w_bytes) + len(b_bytes)]},
    }
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-(8 + len(body)) % 8)
    return struct.pack("<Q", len(body)) + body + w_bytes + b_bytes


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(golden_bytes())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
