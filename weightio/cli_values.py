"""Plain coercion of the CLI's option values, so a verb's start-up does not build pydantic adapters.

The typer this project runs on (>= 0.22, vendoring click as ``typer._click``) coerces every
parameter through a pydantic ``TypeAdapter``, built when the command line is parsed: importing
``typer._adapters`` (pydantic, its plugin loader, ``importlib.metadata``) and building one adapter
per parameter cost ~60 ms of CPU before a verb starts (measured on ``weightio inspect``, a third
of its whole run). Every weightio option is a ``str``, ``Path``, ``int``, ``float``, ``bool`` flag
or a list of ``str``/``Path``, which need no adapter: ``install`` gives those parameters a plain
coercion with the same results and the same error messages (pydantic's wording, so ``--seed abc``
still reads "Input should be a valid integer, ..."). Any other annotation keeps typer's own path,
and on a typer without these internals nothing is changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("Input should be a valid string")


def _as_path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise ValueError("Input should be a valid path")


#: A whole number written with a fractional part of zeros: "8.0", "-3.00".
_WHOLE = re.compile(r"[+-]?[0-9][0-9_]*\.0*")


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("Input should be a valid integer")
    if isinstance(value, int):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    if _WHOLE.fullmatch(text):  # pydantic reads "8.0" as 8 too, but neither "1.5" nor "1e3"
        return int(text.partition(".")[0])
    raise ValueError("Input should be a valid integer, unable to parse string as an integer")


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("Input should be a valid number")
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ValueError("Input should be a valid number, unable to parse string as a number") from None


_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError("Input should be a valid boolean, unable to interpret input")


_LEAVES: dict[Any, Callable[[Any], Any]] = {
    str: _as_str, Path: _as_path, int: _as_int, float: _as_float, bool: _as_bool,
}


def _converter(annotation: Any) -> tuple[Callable[[Any], Any], bool] | None:
    """``(leaf converter, is a list)`` for an annotation this module handles, else ``None``."""
    if annotation in _LEAVES:
        return _LEAVES[annotation], False
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (None,)
        if item in (str, Path):
            return _LEAVES[item], True
    return None


def install() -> None:
    """Make typer build a plain coercion for every parameter this module handles.

    typer's parameters call ``typer.core.build_runtime_param`` once, lazily, when a value is
    first coerced (the options of the verb being run, and ``--help``, which typer makes per
    context); it is wrapped here so those answer without pydantic, and every other parameter
    is passed to typer's own.
    """
    try:
        from typer import core
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam
    except ImportError:  # an older typer coerces through click's own types: nothing to do
        return
    build = getattr(core, "build_runtime_param", None)
    if build is None or getattr(build, "weightio_plain", False):
        return

    @dataclass(frozen=True)
    class PlainParam(RuntimeParam):  # type: ignore[misc]
        """A value converted by a plain function; a failure is click's ``BadParameter``."""

        convert: Callable[[Any], Any]
        many: bool

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                if self.many:
                    items = value if isinstance(value, (list, tuple)) else [value]
                    return [self.convert(item) for item in items]
                return self.convert(value)
            except ValueError as exc:
                raise BadParameter(str(exc), ctx=ctx, param=param) from None

    def plain_or_typer(descriptor: Any) -> Any:
        info = descriptor.parameter_info
        found = None
        if not (descriptor.file_annotation is not None or info.parser is not None
                or info.min is not None or info.max is not None or descriptor.is_choice):
            found = _converter(descriptor.annotation)
        if found is None:
            return build(descriptor)
        return PlainParam(parameter_info=info, annotation=descriptor.annotation,
                          convert=found[0], many=found[1])

    plain_or_typer.weightio_plain = True  # type: ignore[attr-defined]
    core.build_runtime_param = plain_or_typer
