"""A legacy .pt whose pickle states a huge length is refused, typed, under a memory limit.

weightio runs pickles on its own machine (``frameworks/torch/files/opcodes.py``), which knows only
the opcodes ``torch.load(weights_only=True)`` runs: ``BINUNICODE8`` and ``BINBYTES8`` are not among
them, so both are refused before any length is looked at, and no stated length is ever allocated
(a ``BINUNICODE`` longer than the bytes left reads as truncated).
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

_READ_UNDER_LIMIT = r"""
import resource, sys
import weightio
from weightio.errors import WeightioError
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # 2 GiB of address space
try:
    weightio.read(sys.argv[1])
except WeightioError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize(("opcode", "expected"), [
    (b"\x8d", ("MalformedFileError",)),  # BINUNICODE8: not an opcode torch runs
    (b"\x8e", ("MalformedFileError",)),  # BINBYTES8: likewise
    (b"X", ("MalformedFileError",)),  # BINUNICODE of 4 GiB - 1 in a small file: truncated
])
def test_legacy_pickle_claiming_6_gib_is_refused_typed(tmp_path: Path, opcode: bytes,
                                                       expected: tuple[str, ...]) -> None:
    head = b"".join(pickle.dumps(v, protocol=2) for v in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    path = tmp_path / "model.pt"
    length = struct.pack("<I", (1 << 32) - 1) if opcode == b"X" else struct.pack("<Q", 6 << 30)
    path.write_bytes(head + b"\x80\x02" + opcode + length + b"x" * 64 + b".")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _READ_UNDER_LIMIT, str(path)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.stdout.split(" ")[0] in expected, out.stdout + out.stderr
    assert "model.pt" in out.stdout
