"""The mutation engine shared by the hypothesis test, the pure-Python driver and atheris.

Every choice goes through one ``random.Random``-like object, so hypothesis (``st.randoms()``)
can drive and shrink the choices, and a seeded ``random.Random`` makes long runs reproducible.

Byte-level mutations (flips, insert/delete/duplicate ranges, splices between seeds, interesting
integers at 4- and 8-byte positions, truncation) reach every format; structure-aware ones keep
the container valid enough that the damage lands deeper:

- safetensors: the JSON header is parsed, one node is replaced (shapes, offsets, dtype strings,
  metadata, and the ``weightio.spec`` JSON inside the metadata) and the file is re-packed, usually
  with the right header length, sometimes with a wrong one;
- zip (``.keras``, ``.pt``): one member is mutated (recursively by its own kind: JSON, pickle,
  HDF5, raw storage), renamed, dropped, duplicated or re-compressed, and the zip is rebuilt;
- HDF5 and pickles: byte-level, biased towards the start of the file and the places that hold
  structure (HDF5 object-header signatures, pickle opcodes);
- object graphs: a pickle value replaced by a memo reference to an earlier object (sharing, or a
  cycle when that object is still being built), or by 2..40 levels of one reused list; an HDF5
  hard link added from a group to another object (a DAG, or a cycle when it is an ancestor).
  These go through h5py only on an unmutated HDF5 file (h5py may crash on a damaged one);
- JSON numerals replaced by ``Infinity``, ``-Infinity``, ``1e400``, names by markup and escapes.
"""

from __future__ import annotations

import io
import json
import math
import pickletools
import re
import struct
import zipfile
from typing import Any, Protocol


class Chooser(Protocol):
    """The subset of ``random.Random`` the engine uses."""

    def random(self) -> float: ...  # noqa: D102
    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int: ...  # noqa: D102
    def choice(self, seq: Any) -> Any: ...  # noqa: D102


INTERESTING = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 40), (1 << 62), (1 << 63) - 1,
               1 << 63, (1 << 64) - 1]
DTYPES = ["F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64",
          "BOOL", "F8_E4M3", "F8_E5M2", "C64", "F128", "f32", "", "F4", "I4", "float32", "E8M0"]
JSON_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 3, 2**31, 2**63, 2**64 + 1, 10**30, -(2**63), 1.5, -0.0, 1e308,
    "", "x", "F32", "../x", "/etc/passwd", "\x00", "\ud800", "a" * 300, [], [0], [1, 2],
    [-1, 4], [0, 2**62], [[]], {}, {"a": 1}, {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
]
H5_SIGNATURES = [b"OHDR", b"OCHK", b"TREE", b"HEAP", b"SNOD", b"GCOL", b"BTHD", b"BTIN", b"BTLF",
                 b"FRHP", b"FHDB", b"FHIB", b"FSHD", b"FSSE", b"SMTB", b"\x89HDF"]


def _randint(rng: Chooser, low: int, high: int) -> int:
    """An int in ``[low, high]``."""
    return rng.randrange(low, high + 1) if high > low else low


# --- byte level ---------------------------------------------------------------------------------

def flip_bit(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    out = bytearray(data)
    i = _position(rng, len(out), hot)
    out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_byte(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    out = bytearray(data)
    out[_position(rng, len(out), hot)] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    return bytes(out)


def _position(rng: Chooser, size: int, hot: int | None) -> int:
    """A byte position, half the time inside the ``hot`` prefix (where headers live)."""
    if hot and rng.random() < 0.5:
        return rng.randrange(min(hot, size))
    return rng.randrange(size)


def insert_bytes(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    at = _position(rng, len(data) + 1, hot) if data else 0
    n = rng.choice([1, 2, 4, 8, rng.randrange(1, 64)])
    blob = bytes(rng.randrange(256) for _ in range(n)) if rng.random() < 0.5 else bytes([rng.randrange(256)]) * n
    return data[:at] + blob + data[at:]


def delete_range(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    if not data:
        return data
    at = _position(rng, len(data), hot)
    n = rng.choice([1, 2, 4, 8, rng.randrange(1, max(2, len(data) - at))])
    return data[:at] + data[at + n:]


def duplicate_range(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    if not data:
        return data
    at = _position(rng, len(data), hot)
    n = rng.randrange(1, min(256, len(data) - at) + 1)
    to = rng.randrange(len(data) + 1)
    return data[:to] + data[at:at + n] + data[to:]


def interesting_int(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    """Write an edge-case integer as 4 or 8 bytes, little or big endian, often 4/8-aligned."""
    width = rng.choice([4, 8])
    if len(data) < width:
        return data + bytes(width - len(data))
    value = rng.choice(INTERESTING + [len(data), len(data) - 1, len(data) + 1])
    if rng.random() < 0.3:
        value = -value
    fmt = ("<" if rng.random() < 0.8 else ">") + ("q" if width == 8 else "i")
    try:
        packed = struct.pack(fmt, value)
    except struct.error:
        packed = (value & ((1 << (8 * width)) - 1)).to_bytes(width, fmt[0] == "<" and "little" or "big")
    at = _position(rng, len(data) - width + 1, hot)
    if rng.random() < 0.6:
        at -= at % width
    return data[:at] + packed + data[at + width:]


def truncate(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    return data[: rng.randrange(len(data) + 1)] if data else data


def append(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    return data + bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 8, 64])))


def splice(rng: Chooser, data: bytes, others: list[bytes]) -> bytes:
    """Cross-over: a prefix of ``data`` with a suffix of another seed (any format)."""
    other = rng.choice(others) if others else data
    if not data or not other:
        return data + other
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other)):]


BYTE_MUTATORS = [flip_bit, set_byte, insert_bytes, delete_range, duplicate_range,
                 interesting_int, interesting_int, truncate, append]


def mutate_bytes(rng: Chooser, data: bytes, hot: int | None = None) -> bytes:
    return rng.choice(BYTE_MUTATORS)(rng, data, hot)


# --- JSON ----------------------------------------------------------------------------------------

def _paths(node: Any, prefix: tuple[Any, ...] = (), out: list[tuple[Any, ...]] | None = None,
           limit: int = 400) -> list[tuple[Any, ...]]:
    """Every container path in ``node`` (iteratively bounded), the root included."""
    out = [] if out is None else out
    stack = [(node, prefix)]
    while stack and len(out) < limit:
        value, path = stack.pop()
        out.append(path)
        if isinstance(value, dict):
            stack.extend((v, path + (k,)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(value))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def mutate_json_value(rng: Chooser, value: Any) -> Any:
    """One structural change somewhere inside a parsed JSON value (returned, maybe replaced)."""
    paths = _paths(value)
    path = rng.choice(paths)
    target = _get(value, path)
    roll = rng.random()
    if isinstance(target, dict) and target and roll < 0.35:
        key = rng.choice(list(target))
        if rng.random() < 0.5:
            del target[key]
        else:
            target[key + rng.choice(["", "_", "x", "\ud800", "/../x"])] = rng.choice(JSON_VALUES)
        return value
    if isinstance(target, list) and target and roll < 0.35:
        op = rng.randrange(4)
        i = rng.randrange(len(target))
        if op == 0:
            del target[i]
        elif op == 1:
            target.insert(i, target[rng.randrange(len(target))])
        elif op == 2:
            target[i] = rng.choice(JSON_VALUES)
        else:
            target.reverse()
        return value
    replacement = _replacement(rng, target)
    if not path:
        return replacement
    _get(value, path[:-1])[path[-1]] = replacement
    return value


def _replacement(rng: Chooser, target: Any) -> Any:
    if isinstance(target, bool) or rng.random() < 0.3:
        return rng.choice(JSON_VALUES)
    if isinstance(target, int):
        return rng.choice([target + 1, target - 1, -target, target * 2, target * 1000,
                           rng.choice(INTERESTING), float(target)])
    if isinstance(target, str):
        if target.isupper() or target in DTYPES:
            return rng.choice(DTYPES)
        return rng.choice([target + "x", target[:-1], target.upper(), "", "../" + target,
                           target * 3, target.replace("_", "."), "fc1", "dense", "relu",
                           "Functional", "Lambda", "Sequential", "weight", "bias", "[/x]",
                           "[bold red]x", "\x1b[2J", "a\u202eb", "x.x", target + "." + target])
    if isinstance(target, float):
        return rng.choice([0.0, -1.0, 1e300, 2.5, int(target) if math.isfinite(target) else 0])
    return rng.choice(JSON_VALUES)


_NUMBER = re.compile(r"(?<=[:\[,])-?[0-9]+(?:\.[0-9]+)?(?=[,\]}])")


def mutate_json_bytes(rng: Chooser, raw: bytes) -> bytes:
    """Parse, mutate (JSON strings holding JSON, like ``weightio.spec``, recursively), re-dump."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return mutate_bytes(rng, raw)
    value = _mutate_json_deep(rng, value)
    text = json.dumps(value, separators=(",", ":") if rng.random() < 0.7 else (", ", ": "))
    if rng.random() < 0.1:  # things a real parser must also survive
        text = rng.choice([text.replace("1", "NaN", 1), text + " ", "[" + text + "]",
                           text.replace("{", '{"k":1,"k":2,', 1), text.replace('"', "'", 2)])
    elif rng.random() < 0.1:  # a numeral no integer (or float) field can hold
        numbers = [m.span() for m in _NUMBER.finditer(text)][:200]
        if numbers:
            begin, end = rng.choice(numbers)
            text = text[:begin] + rng.choice(["Infinity", "-Infinity", "1e400", "-1e400", "NaN",
                                              "1e30", "4.0", "true"]) + text[end:]
    return text.encode("utf-8", "surrogatepass")


def _mutate_json_deep(rng: Chooser, value: Any) -> Any:
    nested = [p for p in _paths(value) if isinstance(_get(value, p), str)
              and _get(value, p)[:1] in "{[" and len(_get(value, p)) > 2]
    if nested and rng.random() < 0.6:  # the spec JSON inside the safetensors metadata
        path = rng.choice(nested)
        inner = _get(value, path).encode("utf-8", "surrogatepass")
        _get(value, path[:-1])[path[-1]] = mutate_json_bytes(rng, inner).decode(
            "utf-8", "replace")
        return value
    return mutate_json_value(rng, value)


# --- safetensors ---------------------------------------------------------------------------------

def mutate_safetensors(rng: Chooser, data: bytes) -> bytes:
    """Mutate the JSON header and re-pack, usually with the right length."""
    if len(data) < 8:
        return mutate_bytes(rng, data)
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        return mutate_bytes(rng, data, hot=64)
    header, body = data[8:8 + n], data[8 + n:]
    if rng.random() < 0.15:
        body = mutate_bytes(rng, body)
        new_header = header
    else:
        new_header = mutate_json_bytes(rng, header.rstrip(b" "))
        if rng.random() < 0.7:
            new_header += b" " * (-(8 + len(new_header)) % 8)
    length = len(new_header)
    if rng.random() < 0.15:
        length = rng.choice([length + 1, length - 1, length + 8, 0, 1, len(data), 2**63,
                             rng.choice(INTERESTING)])
    return (length % 2**64).to_bytes(8, "little") + new_header + body


# --- zip containers ------------------------------------------------------------------------------

def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(info, zf.read(info)) for info in zf.infolist()]
    except Exception:  # noqa: BLE001 - an unparseable zip just gets byte-level mutations
        return None


def mutate_member(rng: Chooser, name: str, content: bytes, fresh: bool = False) -> bytes:
    """Mutate one member by what it holds."""
    if name.endswith(".json"):
        return mutate_json_bytes(rng, content)
    if name.endswith(".h5"):
        return mutate_hdf5(rng, content, fresh)
    if name.endswith(".pkl"):
        return mutate_pickle(rng, content)
    return mutate_bytes(rng, content)


def mutate_zip(rng: Chooser, data: bytes, fresh: bool = False) -> bytes:
    """Change one member (content, name, presence, compression) and rebuild the zip."""
    members = _members(data)
    if not members:
        return mutate_bytes(rng, data, hot=64)
    roll = rng.random()
    i = rng.randrange(len(members))
    info, content = members[i]
    entries = [(m.filename, m.compress_type, c) for m, c in members]
    if roll < 0.6:
        entries[i] = (info.filename, info.compress_type,
                      mutate_member(rng, info.filename, content, fresh))
    elif roll < 0.7:
        name = rng.choice([info.filename + "x", "../" + info.filename, "/" + info.filename,
                           info.filename.replace("/", "\\"), info.filename.upper(),
                           info.filename.rsplit("/", 1)[0] + "/code/x", "a/b/data.pkl",
                           info.filename.replace("data/", "data/../")])
        entries[i] = (name, info.compress_type, content)
    elif roll < 0.78:
        del entries[i]
    elif roll < 0.86:
        entries.insert(rng.randrange(len(entries) + 1), entries[i])
    elif roll < 0.94:
        kind = zipfile.ZIP_DEFLATED if info.compress_type == zipfile.ZIP_STORED else zipfile.ZIP_STORED
        entries[i] = (info.filename, kind, content)
    else:
        entries.insert(rng.randrange(len(entries) + 1),
                       (rng.choice(["assets/x", "extra", "archive/data/99", "archive/.data/x"]),
                        zipfile.ZIP_STORED, bytes(rng.randrange(256) for _ in range(8))))
    buffer = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicates we add on purpose
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, compression, content in entries:
                zf.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return buffer.getvalue()


# --- HDF5 and pickles ----------------------------------------------------------------------------

def link_hdf5(rng: Chooser, data: bytes) -> bytes | None:
    """A hard link from a random group to a random object of the same (unmutated) file: the file
    becomes a DAG (one object, two names) or a cycle (a group linked inside its descendant)."""
    try:
        import h5py
    except ImportError:  # pragma: no cover
        return None
    buffer = io.BytesIO(data)
    try:
        with h5py.File(buffer, "r+") as f:
            groups: list[Any] = [f]
            objects: list[Any] = []
            f.visititems(lambda name, obj: (groups if isinstance(obj, h5py.Group) else objects)
                         .append(obj) or None)
            objects.extend(groups)
            if not groups:
                return None
            group = rng.choice(groups)
            target = rng.choice(objects) if rng.random() < 0.6 else rng.choice(groups)
            name = rng.choice(["again", "a", "vars", "0", "1", "layers", "sub"])
            if name in group:
                name += str(rng.randrange(1000))
            group[name] = target
    except Exception:  # noqa: BLE001 - a file h5py cannot extend gets other mutations
        return None
    return buffer.getvalue()


def mutate_hdf5(rng: Chooser, data: bytes, fresh: bool = False) -> bytes:
    """Byte-level, often right at an object-header or B-tree signature, or in the superblock;
    on an unmutated file, sometimes a hard link that makes it a DAG or a cycle."""
    if fresh and rng.random() < 0.25:
        linked = link_hdf5(rng, data)
        if linked is not None:
            return linked
    spots = [i for sig in H5_SIGNATURES for i in _find_all(data, sig)]
    if spots and rng.random() < 0.6:
        at = rng.choice(spots) + rng.randrange(64)
        if at < len(data):
            head, tail = data[:at], data[at:]
            return head + mutate_bytes(rng, tail, hot=16)
    return mutate_bytes(rng, data, hot=512)


def _find_all(data: bytes, needle: bytes, limit: int = 64) -> list[int]:
    found, start = [], 0
    while len(found) < limit:
        i = data.find(needle, start)
        if i < 0:
            break
        found.append(i)
        start = i + 1
    return found


PICKLE_OPCODES = b"(.0123FGIJKLMNPRSTUVXabcdeghijklmopqrstu}\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95"


#: Opcodes that push one plain value, which a memo reference can stand in for.
_VALUE_OPS = {"EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "BINUNICODE", "SHORT_BINUNICODE", "BININT",
              "BININT1", "BININT2", "NONE", "NEWFALSE", "NEWTRUE", "BINFLOAT", "BINGET",
              "LONG_BINGET", "LONG1", "SHORT_BINSTRING"}


def _pickle_ops(data: bytes) -> list[tuple[str, Any, int, int]]:
    """``(opcode name, argument, start, end)`` of every opcode of each pickle ``data`` holds
    back to back (a legacy .pt is five), as far as they parse."""
    ops: list[tuple[str, Any, int, int]] = []
    start = 0
    while start < len(data) and len(ops) < 20000:
        try:
            found = list(pickletools.genops(data[start:]))
        except Exception:  # noqa: BLE001 - the rest is raw storage bytes, or damage
            break
        for i, (op, arg, pos) in enumerate(found):
            end = found[i + 1][2] if i + 1 < len(found) else pos + 1
            ops.append((op.name, arg, start + pos, start + end))
        start += found[-1][2] + 1
    return ops


def _shared_lists(levels: int, base: int) -> bytes:
    """``levels`` nested lists, each holding the one below twice (memo ``base`` upwards)."""
    out = bytearray(b"]r" + struct.pack("<I", base))
    for i in range(levels):
        ref = b"j" + struct.pack("<I", base + i)
        out += b"](" + ref + ref + b"er" + struct.pack("<I", base + i + 1)
    return bytes(out)


def share_pickle(rng: Chooser, data: bytes) -> bytes | None:
    """Replace one value with a reference to an earlier memoised object (shared, or a cycle when
    that object is a container still being filled), add such a reference as one more item of a
    container being filled, or replace a value with 2..40 levels of one shared list."""
    ops = _pickle_ops(data)
    fills = [(i, op) for i, op in enumerate(ops) if op[0] in ("SETITEMS", "APPENDS")]
    if fills and rng.random() < 0.3:  # one more item: a reference to an earlier object, often
        index, (name, _, begin, _) = rng.choice(fills)  # the container being filled (a cycle)
        puts = [op[1] for op in ops[:index] if op[0] in ("BINPUT", "LONG_BINPUT")]
        if puts:
            ref = b"j" + struct.pack("<I", rng.choice(puts[:3] + puts[-3:]))
            key = b"X\x05\x00\x00\x00again" if name == "SETITEMS" else b""
            return data[:begin] + key + ref + data[begin:]
    values = [(i, op) for i, op in enumerate(ops) if op[0] in _VALUE_OPS]
    if not values:
        return None
    index, (_, _, begin, end) = rng.choice(values)
    if rng.random() < 0.4:
        replacement = _shared_lists(_randint(rng, 2, 40), 60000 + rng.randrange(1000))
    else:
        puts = [op[1] for op in ops[:index] if op[0] in ("BINPUT", "LONG_BINPUT", "MEMOIZE")]
        if not puts or not all(isinstance(p, int) for p in puts):
            return None
        replacement = b"j" + struct.pack("<I", rng.choice(puts))
    return data[:begin] + replacement + data[end:]


def mutate_pickle(rng: Chooser, data: bytes) -> bytes:
    """Byte-level, one byte replaced by a pickle opcode (which reshapes the stack), or a value
    replaced by a shared reference (see ``share_pickle``)."""
    if data and rng.random() < 0.2:
        shared = share_pickle(rng, data)
        if shared is not None:
            return shared
    if data and rng.random() < 0.3:
        out = bytearray(data)
        out[rng.randrange(len(out))] = rng.choice(PICKLE_OPCODES)
        return bytes(out)
    return mutate_bytes(rng, data)


# --- entry point ---------------------------------------------------------------------------------

def structured(rng: Chooser, reader: str, data: bytes, fresh: bool = False) -> bytes:
    """One structure-aware mutation for ``reader``'s format (``fresh``: ``data`` is a seed, not
    yet mutated, which h5py may safely open)."""
    if reader == "archive":
        return mutate_safetensors(rng, data)
    if reader in ("keras", "pt"):
        return mutate_zip(rng, data, fresh)
    if reader == "h5":
        return mutate_hdf5(rng, data, fresh)
    if reader == "pt_legacy":
        return mutate_pickle(rng, data)
    raise ValueError(reader)


def mutate(rng: Chooser, reader: str, data: bytes, others: list[bytes] | None = None,
           max_stack: int = 3) -> bytes:
    """Apply 1..``max_stack`` mutations to ``data`` (a seed of ``reader``)."""
    for step in range(_randint(rng, 1, max_stack)):
        roll = rng.random()
        if roll < 0.55:
            data = structured(rng, reader, data, fresh=step == 0)
        elif roll < 0.93:
            data = mutate_bytes(rng, data, hot=256)
        else:
            data = splice(rng, data, others or [])
        if len(data) > 4 << 20:  # keep inputs small: a duplicate-heavy stack can grow them
            data = data[: 4 << 20]
    return data
