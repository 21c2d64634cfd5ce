"""A legacy .pt whose pickle states a huge length is refused, typed, under a memory limit.

``BINUNICODE8`` goes through ``read(n)``, which weightio clamps to what the file holds: the pickle
reads as truncated. ``BINBYTES8`` is allocated by CPython's unpickler itself before it reads
(``PyBytes_FromStringAndSize(NULL, n)``): under a tight limit that is a ``MemoryError``, which
weightio reports as ``ResourceLimitError``; with room, the allocation stays untouched and the
pickle reads as truncated.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

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
    (b"\x8d", ("MalformedFileError",)),  # BINUNICODE8: clamped read
    (b"\x8e", ("MalformedFileError", "ResourceLimitError")),  # BINBYTES8: unpickler allocates
])
def test_legacy_pickle_claiming_6_gib_is_refused_typed(tmp_path: Path, opcode: bytes,
                                                       expected: tuple[str, ...]) -> None:
    head = b"".join(pickle.dumps(v, protocol=2) for v in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    path = tmp_path / "model.pt"
    path.write_bytes(head + b"\x80\x04" + opcode + struct.pack("<Q", 6 << 30) + b"x" * 64 + b".")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _READ_UNDER_LIMIT, str(path)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.stdout.split(" ")[0] in expected, out.stdout + out.stderr
    assert "model.pt" in out.stdout
