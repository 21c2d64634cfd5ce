r"""What reaches a terminal is text: names from files shown literally, never as codes.

Layer and tensor names, module names, keys and paths come from files strangers wrote. Printed raw,
an ANSI escape (``\x1b[2J``) clears the screen or recolours what follows, a carriage return
overwrites the line, a NUL or a bell reaches the terminal, and a bidi override (U+202E) makes
``fc.weight`` display as something else. Printed through rich as markup, ``[/x]`` raises and
``[bold red]`` restyles the report. ``printable`` is the one escaping function every renderer
uses (the CLI's lines and error messages, the rich tables of ``report.text``, the HTML report's
text): every character that is not printable (Unicode's control, format, separator other than
space, surrogate, private-use and unassigned characters: C0/C1 controls, DEL, bidi controls,
zero-width characters) is shown as its Python escape (``\x1b``, ``\u202e``). Rich renderers
take the result as ``rich.text.Text``, never as markup.
"""

from __future__ import annotations

import json
import re

__all__ = ["json_text", "printable", "printable_lines"]


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object) -> str:
    r"""``text`` with every non-printable character shown as its escape (``\x1b``, ``\u202e``).

    Printable text (letters, digits, punctuation, spaces, emoji…) is unchanged; newlines and tabs
    are escaped too, so a name is always one line.
    """
    value = str(text)
    if value.isprintable():
        return value
    return "".join(char if char.isprintable() else _escape(char) for char in value)


def printable_lines(text: str) -> str:
    """Each line of ``text`` made ``printable``; the line breaks themselves are kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


_JSON_UNSAFE = re.compile(r"[^\x20-\x7e\n]")


def json_text(text: str) -> str:
    r"""JSON for a terminal: characters that are not printable (inside strings, the only place
    they can be) written as ``\uXXXX`` escapes, so the JSON means the same and shows plainly.
    """

    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        return char if char.isprintable() else json.dumps(char)[1:-1]

    return _JSON_UNSAFE.sub(escape, text)
