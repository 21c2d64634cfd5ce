"""The global-heap scan's windowed, two-thread ``find`` gives exactly ``mmap.find``'s answers."""

from __future__ import annotations

import mmap
import random
from pathlib import Path

from weightio.frameworks.keras.files.reader import _Scan


def test_scan_find_matches_mmap_find(tmp_path: Path) -> None:
    window = _Scan._WINDOW
    rng = random.Random(0)
    data = bytearray(rng.randbytes(2 * window + 12345))
    planted = [0, 5, window - 3, window - 1, window, 2 * window + 7, len(data) - 4]
    for at in planted:
        data[at:at + 4] = b"GCOL"
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(data))
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as plain:
        scan = _Scan(plain)
        for _ in range(50):
            start = rng.randrange(0, len(data))
            end = rng.choice([None, rng.randrange(start, len(data) + 5)])
            for needle in (b"GCOL", b"G", b"OL"):
                expected = plain.find(needle, start, len(data) if end is None else end)
                assert scan.find(needle, start, end) == expected, (needle, start, end)
        found, at = [], scan.find(b"GCOL")
        while at >= 0:
            found.append(at)
            at = scan.find(b"GCOL", at + 1)
        expected_all, at = [], plain.find(b"GCOL")
        while at >= 0:
            expected_all.append(at)
            at = plain.find(b"GCOL", at + 1)
        assert found == expected_all
        assert scan.find(b"GCOL", len(data)) == -1 and scan[0:4] == b"GCOL"
