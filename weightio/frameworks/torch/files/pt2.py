"""``.pt2`` files (``torch.export.save``): checked for every way ``torch.export.load`` runs code,
then loaded by it.

``torch.export.load`` is not safe on an untrusted file as it stands (torch 2.13, read in
``torch/export/pt2_archive/_package.py``, ``torch/_export/serde/serialize.py`` and
``torch/export/_unlift.py``):

- a weight or tensor constant flagged ``use_pickle`` is loaded with
  ``torch.load(weights_only=False)``, which runs whatever the pickle names;
- a constant stored as an opaque object is ``pickle.loads``-ed, a custom (torchbind) object goes
  through TorchScript's unpickler;
- the sample inputs are loaded with ``torch.load(weights_only=True)`` and, when that fails,
  again with ``weights_only=False``;
- node targets and operator arguments are resolved by walking attributes from ``torch``
  (``torch.<anything>``), so a name must be a registered operator;
- symbolic shape expressions (``expr_str``) are parsed with ``sympy.sympify``, which ``eval``-s
  the string;
- ``ExportedProgram.module()`` turns the program's ``guards_code`` strings into Python with
  ``exec``, run at every call. weightio asks for ``module(check_guards=False)``, which compiles
  none, and still allows only guards comparing input sizes (``L['x'].size()[0] ==
  L['y'].size()[0]``), so what it accepts stays safe to hand to torch's own tools;
- an AOTInductor package (``data/aotinductor/``) holds compiled native code, and the loader's
  fallback for the pre-2.8 layout (a root-level ``version`` member) unpickles with
  ``weights_only=False`` too.

``check_program`` refuses each of those before torch sees the file, so the load that follows
reads only JSON and raw tensor bytes. ``trust_pickle=True`` (CLI ``--trust-pickle``) skips the
checks for a file the user trusts. Zip damage, sizes and missing members are typed here too,
so a broken file is one ``MalformedFileError`` naming it, never a traceback from torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightio.errors import MalformedFileError, ResourceLimitError, UnsafeFormatError
from weightio.format.paths import check_regular, open_regular
from weightio.format.zip import ZIP_ERRORS, is_zip, read_member, zip_errors
from weightio.frameworks.torch.common import torch_module
from weightio.frameworks.torch.files.state_dict import check_safe_torch

if TYPE_CHECKING:  # pragma: no cover
    from weightio.frameworks.torch.nesting import Nesting

#: Largest JSON member (the program, the payload configs) read into memory.
MAX_JSON_BYTES = 64 * 1024 * 1024
#: Most members a ``.pt2`` may hold (one per weight, plus a dozen records).
MAX_MEMBERS = 200_000
#: A compressed member may expand at most this much (zip bombs).
MAX_COMPRESSION_RATIO = 200
#: The records ``torch.export.save`` writes for the one program ``torch.export.load`` returns.
REQUIRED = (
    "archive_format",
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
    "data/sample_inputs/model.pt",
)
#: Tensor constants are stored under this prefix; any other constant is a pickled object.
TENSOR_CONSTANT_PREFIX = "tensor_"
#: ``sympy.sympify`` input allowed: names, numbers, quoted symbol names, arithmetic, calls.
_EXPR_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|'[A-Za-z_][A-Za-z0-9_]*'|\d+(?:\.\d+)?|"
                         r"\*\*|[-+*/(),=<>%])")
#: Callables a graph may name: registered operators (``torch.ops.<namespace>.<op>[.<overload>]``),
#: Python's ``operator`` functions and the symbolic-size helpers torch.export itself emits.
_TARGET = re.compile(r"torch\.ops\.[A-Za-z_]\w*\.[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?|"
                     r"_operator\.(?:add|sub|mul|truediv|floordiv|mod|pow|neg|pos|getitem|eq|ne|lt|le|gt|ge|and_|or_|not_)|"
                     r"math\.\w+|torch\.sym_\w+|torch\._sym_\w+")
#: Names an expression may use: symbols (``s0``, ``u3``) and sympy's own constructors.
_SYMBOL = re.compile(r"[a-z]+\d+")
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "True", "False", "positive", "integer", "real",
    "nonnegative", "finite", "Mul", "Add", "Pow", "Max", "Min", "Mod", "FloorDiv",
    "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "TruncToFloat",
    "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "oo", "zoo",
})


def _unsafe(what: str, path: Path) -> UnsafeFormatError:
    return UnsafeFormatError(
        f"{what}, which torch.export.load would run as code; weightio refuses it. If you trust "
        "the file, pass trust_pickle=True (CLI --trust-pickle), or re-export the program",
        file=path,
    )


class _Members:
    """The zip's members under the one folder ``torch.export.save`` puts them in."""

    def __init__(self, zf: zipfile.ZipFile, path: Path) -> None:
        self.zf, self.path = zf, path
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ResourceLimitError(f"the zip has {len(infos)} members, over {MAX_MEMBERS}",
                                     file=path)
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise MalformedFileError("the zip holds duplicate member names", file=path)
        first = names[0] if names else ""
        if "/" not in first:
            raise MalformedFileError(
                f"the zip's first member {first[:100]!r} is not in a folder; torch.export.save "
                "puts every record under '<name>/'. Is it a .pt2 file?", file=path,
            )
        self.prefix = first[: first.index("/") + 1]
        # A member outside the folder is what the loader's pre-2.8 fallback reads, unpickling
        # with weights_only=False
        stray = [n for n in names if not n.startswith(self.prefix)]
        if stray:
            raise _unsafe(f"the member {stray[0][:100]!r} lies outside the archive folder "
                          f"{self.prefix!r} (the loader's legacy path unpickles such files)", path)
        self.infos = {n[len(self.prefix):]: i for n, i in zip(names, infos)}
        native = [n for n in self.infos if n.startswith("data/aotinductor/") or n.endswith(".so")]
        if native:
            raise _unsafe(f"it holds compiled code ({native[0][:100]!r}, an AOTInductor package)",
                          path)
        missing = [n for n in REQUIRED if n not in self.infos]
        if missing:
            raise MalformedFileError(
                f"the zip lacks {', '.join(repr(self.prefix + n) for n in missing)}; a .pt2 "
                "written by torch.export.save has them. Is it a torch.export program?",
                file=path,
            )

    def read(self, name: str, limit: int = MAX_JSON_BYTES) -> bytes:
        info = self.infos[name]
        if info.file_size > limit:
            raise ResourceLimitError(
                f"member {info.filename!r} declares {info.file_size} bytes, over the "
                f"{limit}-byte limit", file=self.path,
            )
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(
            1 << 20, MAX_COMPRESSION_RATIO * info.compress_size
        ):
            raise ResourceLimitError(
                f"member {info.filename!r} expands over {MAX_COMPRESSION_RATIO} times (a zip "
                "bomb?)", file=self.path,
            )
        return read_member(self.zf, info, self.path)

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise MalformedFileError(
                f"member {self.prefix + name!r} is not JSON ({type(exc).__name__}: "
                f"{str(exc)[:200]})", file=self.path,
            ) from None


def _payloads(config: Any, member: str, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise MalformedFileError(f"member {member!r} has no 'config' mapping", file=path)
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise MalformedFileError(f"member {member!r}: entry {fqn!r} has no path_name",
                                     file=path)
        yield fqn, meta


def _check_payloads(members: _Members) -> None:
    path = members.path
    for member, constants in (("data/weights/model_weights_config.json", False),
                              ("data/constants/model_constants_config.json", True)):
        for fqn, meta in _payloads(members.json(member), member, path):
            if meta.get("use_pickle"):
                raise _unsafe(f"its tensor {fqn!r} is stored as a pickle (loaded with "
                              "torch.load(weights_only=False))", path)
            if constants and not meta["path_name"].startswith(TENSOR_CONSTANT_PREFIX):
                raise _unsafe(f"its constant {fqn!r} is a pickled Python or torchbind object",
                              path)


def _strings_under(value: Any, key: str) -> Iterator[str]:
    """Every string stored under ``key`` anywhere in a JSON document."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k == key and isinstance(v, str):
                    yield v
                else:
                    pending.append(v)
        elif isinstance(item, list):
            pending.extend(item)


def safe_expression(text: str) -> bool:
    """Whether ``sympy.sympify`` can parse ``text`` without reaching anything but sympy's
    number and symbol constructors: no attribute access, subscripts, strings or other names.
    """
    pos = 0
    while pos < len(text):
        match = _EXPR_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            return text[pos:].strip() == ""
        name = match.group(1)
        if name is not None and name not in _EXPR_NAMES and not _SYMBOL.fullmatch(name):
            return False
        pos = match.end()
    return True


def _targets(value: Any) -> Iterator[str]:
    """Every callable a program names: node targets and operators passed as arguments."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if isinstance(item.get("target"), str) and "inputs" in item:
                yield item["target"]
            if isinstance(item.get("as_operator"), str):
                yield item["as_operator"]
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


#: Guard code ``torch.export`` writes: sizes of named inputs compared with integers.
_GUARD_TOKEN = re.compile(
    r"\s*(?:L\['[A-Za-z_]\w*'\](?:\[\d+\])*\.(?:size|stride)\(\)\[\d+\]|\d+|==|!=|<=|>=|<|>|"
    r"//|[-+*%()]|(?:and|or|not)\b)"
)


def safe_guard(text: str) -> bool:
    """Whether a ``guards_code`` line is only input sizes compared with integers, so the
    ``exec`` of ``ExportedProgram.module()`` can reach nothing else.
    """
    pos = 0
    while pos < len(text):
        match = _GUARD_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            return text[pos:].strip() == ""
        pos = match.end()
    return True


def _check_program(members: _Members) -> None:
    path = members.path
    program = members.json("models/model.json")
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise MalformedFileError("member 'models/model.json' holds no graph_module", file=path)
    guards = program.get("guards_code") or []
    for guard in guards if isinstance(guards, list) else [guards]:
        if not isinstance(guard, str) or not safe_guard(guard):
            raise _unsafe(f"it records the guard {str(guard)[:80]!r}, which is not a comparison "
                          "of input sizes; ExportedProgram.module() executes guards with exec",
                          path)
    for target in _targets(program.get("graph_module")):
        if not _TARGET.fullmatch(target):
            raise _unsafe(f"a node calls {target[:80]!r}, not a registered operator (torch "
                          "resolves such names by walking attributes from the torch module)", path)
    ranges = program.get("range_constraints") or {}
    expressions = [*(ranges if isinstance(ranges, dict) else []),
                   *_strings_under(program, "expr_str")]
    for text in expressions:
        if not safe_expression(str(text)):
            raise _unsafe(f"the shape expression {str(text)[:80]!r} is not plain arithmetic on "
                          "symbols (torch parses it with sympy.sympify, which evaluates it)", path)


def _check_sample_inputs(members: _Members, torch: Any) -> None:
    """Refuse sample inputs that do not load weights-only: torch retries such a load with
    ``weights_only=False``. The same bytes that load weights-only here do so there.
    """
    raw = members.read("data/sample_inputs/model.pt", limit=1 << 30)
    if not raw:
        return
    try:
        torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure means torch would fall back to unpickling with code
        raise _unsafe(f"its sample inputs do not load weights-only ({type(exc).__name__})",
                      members.path) from None


def check_program(path: Path) -> None:
    """Refuse a ``.pt2`` that is damaged, or that ``torch.export.load`` would run code from.

    Raises:
        MalformedFileError: not a zip, truncated, or missing a record torch.export writes.
        ResourceLimitError: too many members, or a member too large.
        UnsafeFormatError: pickled tensors or objects, guard code, callables that are not
            registered operators, non-arithmetic shape expressions, sample inputs that need
            code, compiled code, or legacy records.
    """
    torch = torch_module("reading .pt2 files")
    check_safe_torch(torch.__version__, path)
    if not is_zip(path):
        raise MalformedFileError(
            "is not a zip archive; a torch.export program (.pt2) is one. The file is truncated "
            "or not a .pt2", file=path,
        )
    with _opened(path) as members:
        _check_payloads(members)
        _check_program(members)
        _check_sample_inputs(members, torch)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[_Members]:
    """The members of the ``.pt2`` zip at ``path``, under its limits; zip errors typed."""
    with open_regular(path) as handle:
        try:
            zf = zipfile.ZipFile(handle)
        except ZIP_ERRORS as exc:
            raise MalformedFileError(f"unreadable zip ({type(exc).__name__}: {exc})",
                                     file=path) from None
        with zf, zip_errors(path, "the .pt2 zip"):
            yield _Members(zf, path)


def load_program(path: Path, *, trusted: bool = False) -> Any:
    """``torch.export.load(path)``, after ``check_program`` unless the file is ``trusted``.

    Raises:
        MalformedFileError: torch could not load it (the message keeps torch's reason).
        UnsafeFormatError: see ``check_program``.
    """
    torch = torch_module("reading .pt2 files")
    check_regular(path)
    if not trusted:
        check_program(path)
    # torch logs a failed load with its traceback before trying the legacy layout; the typed
    # error below says it all
    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return torch.export.load(path)
    except Exception as exc:  # torch's loader raises many types; all mean "cannot load"
        raise MalformedFileError(
            f"torch.export.load could not read it ({type(exc).__name__}: {str(exc)[:300]}); "
            "the file is damaged or was written by an incompatible torch", file=path,
        ) from None
    finally:
        log.setLevel(level)


def program_nesting(path: Path) -> Nesting:
    """The nested-model groups (and their Keras classes) a ``.pt2`` weightio wrote keeps beside
    its program (the member ``extra/weightio.groups.json``, ``weightio.frameworks.torch.nesting``);
    none without one.

    Read as data under the same zip limits as the program; a damaged member is a
    ``MalformedFileError`` naming the file.
    """
    from weightio.frameworks.torch.nesting import EXTRA_FILE, NO_NESTING, parse_nesting

    with _opened(path) as members:
        name = f"extra/{EXTRA_FILE}"
        if name not in members.infos:
            return NO_NESTING
        return parse_nesting(members.read(name, limit=1 << 20), file=path)
