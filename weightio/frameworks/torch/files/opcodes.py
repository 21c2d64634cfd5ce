"""The pickle opcodes ``torch.load(weights_only=True)`` runs, and no others, run as data.

CPython's unpickler does more than PyTorch's weights-only one: it knows every protocol's
opcodes, calls ``append``/``extend``/``__setitem__`` on whatever object is on the stack, sets
attributes through ``BUILD`` and allocates a length-prefixed object before reading it. Each of
those is a way for weightio's view of a file to differ from PyTorch's, so this module executes
exactly the opcodes PyTorch's ``torch/_weights_only_unpickler.py`` executes, with the same type
checks (``APPEND`` only on lists, ``SETITEM`` only on dicts), and refuses everything else: a file
weightio accepts is one ``torch.load(weights_only=True)`` accepts too, and reads the same.

Strings and integers are read from the bytes that exist: a stated length larger than what is left
is a truncated pickle, never an allocation. The machine builds plain containers (``list``,
``tuple``, ``dict``, ``set``, ``OrderedDict``) and whatever the caller's ``resolve_global`` and
``persistent_load`` return; ``REDUCE`` and ``NEWOBJ`` call only what ``resolve_global`` returned
and the caller listed in ``callables``, and ``BUILD`` is handed to the caller's ``build``.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from weightio.errors import MalformedFileError, UnsafeFormatError, WeightioError

_UNPACK_I = struct.Struct("<i").unpack_from
_UNPACK_UI = struct.Struct("<I").unpack_from
_UNPACK_H = struct.Struct("<H").unpack_from
_UNPACK_D = struct.Struct(">d").unpack_from

#: Opcode names, for refusals.
_NAMES = {
    0x80: "PROTO", 0x2E: "STOP", 0x63: "GLOBAL", 0x81: "NEWOBJ", 0x52: "REDUCE", 0x62: "BUILD",
    0x61: "APPEND", 0x65: "APPENDS", 0x73: "SETITEM", 0x75: "SETITEMS", 0x28: "MARK",
    0x74: "TUPLE", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3", 0x4E: "NONE",
    0x89: "NEWFALSE", 0x88: "NEWTRUE", 0x29: "EMPTY_TUPLE", 0x5D: "EMPTY_LIST",
    0x7D: "EMPTY_DICT", 0x8F: "EMPTY_SET", 0x4A: "BININT", 0x4B: "BININT1", 0x4D: "BININT2",
    0x47: "BINFLOAT", 0x58: "BINUNICODE", 0x55: "SHORT_BINSTRING", 0x51: "BINPERSID",
    0x68: "BINGET", 0x6A: "LONG_BINGET", 0x71: "BINPUT", 0x72: "LONG_BINPUT", 0x8A: "LONG1",
}
_OTHER = {
    0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x93: "STACK_GLOBAL",
    0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER", 0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x69: "INST", 0x6F: "OBJ",
    0x92: "NEWOBJ_EX", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x32: "DUP", 0x30: "POP",
    0x31: "POP_MARK", 0x49: "INT", 0x4C: "LONG", 0x46: "FLOAT", 0x53: "STRING", 0x56: "UNICODE",
    0x50: "PERSID", 0x67: "GET", 0x70: "PUT", 0x8B: "LONG4", 0x54: "BINSTRING", 0x82: "EXT1",
    0x83: "EXT2", 0x84: "EXT4",
}


class PickleError(Exception):
    """A pickle this machine cannot run: truncated, inconsistent, or outside the opcode set."""


def _unsupported(op: int) -> MalformedFileError:
    name = _NAMES.get(op) or _OTHER.get(op) or f"0x{op:02x}"
    return MalformedFileError(
        f"the pickle uses opcode {name}, which torch.load(weights_only=True) does not run either; "
        "weightio reads exactly what PyTorch's weights-only loader reads. Re-save the state dict "
        "with torch.save (pickle protocol 2)"
    )


def run_pickle(
    data: Any,
    start: int,
    end: int,
    *,
    resolve_global: Callable[[str, str], Any],
    callables: Callable[[Any], bool],
    persistent_load: Callable[[Any], Any],
    build: Callable[[Any, Any], None],
    encoding: str = "utf-8",
) -> tuple[Any, int]:
    """Run one pickle found in ``data[start:end]``; return its object and where it ended.

    Args:
        data: Bytes (or an ``mmap``) holding the pickle.
        resolve_global: ``GLOBAL module name`` -> the object to push (raises to refuse).
        callables: Whether a stack object may be called by ``REDUCE``/``NEWOBJ`` (only what
            ``resolve_global`` returned; ``NEWOBJ`` creates only an ``OrderedDict``).
        persistent_load: ``BINPERSID`` id (a tuple) -> the object to push.
        build: ``BUILD``: ``build(instance, state)`` sets state or raises.
        encoding: How ``SHORT_BINSTRING`` bytes decode (``torch.load`` passes ``utf-8``).

    Raises:
        PickleError: truncated or inconsistent (the caller names the file).
        MalformedFileError: an opcode PyTorch's weights-only loader refuses.
        UnsafeFormatError: a call of something that is not allowlisted.
    """
    pos = start
    stack: list[Any] = []
    metastack: list[list[Any]] = []
    memo: dict[int, Any] = {}

    def need(count: int) -> int:
        nonlocal pos
        if pos + count > end:
            raise PickleError("the pickle is truncated")
        at = pos
        pos += count
        return at

    def pop() -> Any:
        if not stack:
            raise PickleError("the pickle pops an empty stack")
        return stack.pop()

    def top() -> Any:
        if not stack:
            raise PickleError("the pickle reads an empty stack")
        return stack[-1]

    def pop_mark() -> list[Any]:
        nonlocal stack
        if not metastack:
            raise PickleError("the pickle closes a MARK it never opened")
        items = stack
        stack = metastack.pop()
        return items

    def line() -> str:
        nonlocal pos
        stop = data.find(b"\n", pos, end) if hasattr(data, "find") else -1
        if stop < 0:
            raise PickleError("the pickle is truncated inside a GLOBAL name")
        raw = bytes(data[pos:stop])
        pos = stop + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PickleError("a GLOBAL name is not UTF-8") from None

    while True:
        at = need(1)
        op = data[at]
        if op == 0x80:  # PROTO
            need(1)
        elif op == 0x2E:  # STOP
            return pop(), pos
        elif op == 0x63:  # GLOBAL
            module = line()
            name = line()
            stack.append(resolve_global(module, name))
        elif op == 0x81:  # NEWOBJ
            args = pop()
            cls = pop()
            if cls is not OrderedDict or not isinstance(args, tuple):
                raise UnsafeFormatError(
                    f"the pickle creates an object of {_describe(cls)} with NEWOBJ; only "
                    "collections.OrderedDict may be created"
                )
            stack.append(OrderedDict())
        elif op == 0x52:  # REDUCE
            args = pop()
            func = top()
            if not callables(func):
                raise UnsafeFormatError(
                    f"the pickle calls {_describe(func)}, which is not a tensor rebuild function "
                    "or OrderedDict"
                )
            if not isinstance(args, tuple):
                raise PickleError("REDUCE arguments are not a tuple")
            try:
                stack[-1] = func(*args)
            except WeightioError:
                raise
            except TypeError as exc:  # a wrong number of arguments: torch's own call fails too
                raise PickleError(f"a rebuild call does not match its signature ({exc})") from None
        elif op == 0x62:  # BUILD
            state = pop()
            build(top(), state)
        elif op == 0x61:  # APPEND
            item = pop()
            target = top()
            if type(target) is not list:
                raise PickleError(f"APPEND to a {type(target).__name__}, not a list")
            target.append(item)
        elif op == 0x65:  # APPENDS
            items = pop_mark()
            target = top()
            if type(target) is not list:
                raise PickleError(f"APPENDS to a {type(target).__name__}, not a list")
            target.extend(items)
        elif op == 0x73:  # SETITEM
            value = pop()
            key = pop()
            _set_items(top(), [key, value])
        elif op == 0x75:  # SETITEMS
            items = pop_mark()
            _set_items(top(), items)
        elif op == 0x28:  # MARK
            metastack.append(stack)
            stack = []
        elif op == 0x74:  # TUPLE
            items = pop_mark()  # rebinds ``stack``: take the items before appending
            stack.append(tuple(items))
        elif op == 0x85:  # TUPLE1
            stack.append((pop(),))
        elif op == 0x86:  # TUPLE2
            b = pop()
            stack.append((pop(), b))
        elif op == 0x87:  # TUPLE3
            c = pop()
            b = pop()
            stack.append((pop(), b, c))
        elif op == 0x4E:  # NONE
            stack.append(None)
        elif op == 0x89:  # NEWFALSE
            stack.append(False)
        elif op == 0x88:  # NEWTRUE
            stack.append(True)
        elif op == 0x29:  # EMPTY_TUPLE
            stack.append(())
        elif op == 0x5D:  # EMPTY_LIST
            stack.append([])
        elif op == 0x7D:  # EMPTY_DICT
            stack.append({})
        elif op == 0x8F:  # EMPTY_SET
            stack.append(set())
        elif op == 0x4A:  # BININT
            stack.append(_UNPACK_I(data, need(4))[0])
        elif op == 0x4B:  # BININT1
            stack.append(data[need(1)])
        elif op == 0x4D:  # BININT2
            stack.append(_UNPACK_H(data, need(2))[0])
        elif op == 0x47:  # BINFLOAT
            stack.append(_UNPACK_D(data, need(8))[0])
        elif op == 0x58:  # BINUNICODE
            size = _UNPACK_UI(data, need(4))[0]
            first = need(size)
            try:
                stack.append(str(bytes(data[first:first + size]), "utf-8", "surrogatepass"))
            except UnicodeDecodeError:
                raise PickleError("a string is not UTF-8") from None
        elif op == 0x55:  # SHORT_BINSTRING
            size = data[need(1)]
            first = need(size)
            raw = bytes(data[first:first + size])
            try:
                stack.append(raw if encoding == "bytes" else raw.decode(encoding, "strict"))
            except UnicodeDecodeError:
                raise PickleError(f"a string is not {encoding}") from None
        elif op == 0x51:  # BINPERSID
            pid = pop()
            stack.append(persistent_load(pid))
        elif op in (0x68, 0x6A):  # BINGET, LONG_BINGET
            index = data[need(1)] if op == 0x68 else _UNPACK_UI(data, need(4))[0]
            if index not in memo:
                raise PickleError(f"the pickle reads memo entry {index}, which was never stored")
            stack.append(memo[index])
        elif op in (0x71, 0x72):  # BINPUT, LONG_BINPUT
            index = data[need(1)] if op == 0x71 else _UNPACK_UI(data, need(4))[0]
            memo[index] = top()
        elif op == 0x8A:  # LONG1
            size = data[need(1)]
            first = need(size)
            stack.append(int.from_bytes(bytes(data[first:first + size]), "little", signed=True))
        else:
            raise _unsupported(op)


#: Types a dict key may have. Hashing a tuple walks it, and a pickle's memo can make a tuple of
#: 40 levels of one shared tuple: 2**40 steps inside ``hash()``. State-dict and checkpoint keys
#: are names and numbers, so nothing else is a key here.
_KEY_TYPES = (str, int, float, bool, type(None))


def _set_items(target: Any, items: list[Any]) -> None:
    if type(target) not in (dict, OrderedDict):
        raise PickleError(f"SETITEM on a {type(target).__name__}, not a dict")
    if len(items) % 2:
        raise PickleError("SETITEMS with an odd number of items")
    for i in range(0, len(items), 2):
        if type(items[i]) not in _KEY_TYPES:
            raise PickleError(f"a dict key is a {type(items[i]).__name__}; weightio reads "
                              "dicts keyed by names and numbers")
        target[items[i]] = items[i + 1]


def _describe(obj: Any) -> str:
    name = getattr(obj, "name", None) or getattr(obj, "__qualname__", None)
    return f"{name!r}" if isinstance(name, str) else f"a {type(obj).__name__}"
