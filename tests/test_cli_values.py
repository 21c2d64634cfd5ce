"""The CLI's plain option coercion (weightio.cli_values) agrees with the pydantic one it replaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from weightio.cli_values import _converter

VALUES = ["0", "8", "-3", " 12 ", "1_000", "8.0", "8.00", " 1.0 ", "+5", "08", "1_0.5", "1.5", "1e3",
          "1e-3", "inf", "nan", "abc", "",
          "0x10", "true", "False", "yes", "off", "2", "--", "/tmp/x"]


@pytest.mark.parametrize("annotation", [int, float, str, bool, Path])
def test_plain_coercion_matches_pydantic(annotation: type) -> None:
    found = _converter(annotation)
    assert found is not None
    convert, many = found
    assert not many
    adapter = TypeAdapter(annotation)
    for value in VALUES:
        try:
            expected = adapter.validate_python(value)
        except ValidationError as exc:
            with pytest.raises(ValueError) as caught:
                convert(value)
            # the same first words as pydantic's message ("Input should be a valid integer")
            assert str(caught.value).split(",")[0] == exc.errors()[0]["msg"].split(",")[0], value
            continue
        got = convert(value)
        assert type(got) is type(expected), value
        assert got == expected or (got != got and expected != expected), value


def test_lists_and_other_annotations() -> None:
    assert _converter(list[str]) == (_converter(str)[0], True)  # type: ignore[index]
    assert _converter(list[Path]) == (_converter(Path)[0], True)  # type: ignore[index]
    assert _converter(list[int]) is None and _converter(dict) is None


def test_inspect_builds_no_pydantic_adapter(tmp_path: Path) -> None:
    import numpy as np

    import weightio
    from weightio.format.provenance import provenance
    from weightio.format.weights_only import archive_from_state_dict

    path = tmp_path / "m.safetensors"
    archive = archive_from_state_dict({"fc.weight": np.ones((2, 2), "f4")}, name="m",
                                      provenance=provenance("unknown", framework_version=None,
                                                            source_class=None))
    weightio.save(archive, path)
    code = (f"import sys, json\nsys.argv = ['weightio', 'inspect', {str(path)!r}]\n"
            "from weightio.cli import main\ntry:\n    main()\nexcept SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\nprint(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    modules = set(json.loads(out.strip().splitlines()[-1]))
    assert "typer._adapters" not in modules


def test_entry_runs_exit_handlers_and_keeps_the_exit_code(tmp_path: Path) -> None:
    """``weightio.cli.entry`` skips the interpreter teardown, not what a normal exit does."""
    marker = tmp_path / "atexit.txt"
    for argv, code in ((["--version"], 0), (["inspect", str(tmp_path / "absent.safetensors")], 2)):
        script = (
            "import atexit, sys, threading, time\n"
            f"atexit.register(lambda: open({str(marker)!r}, 'a').write('ran\\n'))\n"
            f"threading.Thread(target=lambda: (time.sleep(0.2), open({str(marker)!r}, 'a')"
            ".write('thread\\n'))).start()\n"
            f"sys.argv = ['weightio', *{argv!r}]\n"
            "from weightio.cli import entry\nentry()\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == code, result.stderr
        assert marker.read_text().splitlines()[-2:] == ["thread", "ran"]
    assert "weightio" in subprocess.run([sys.executable, "-m", "weightio", "--version"],
                                        capture_output=True, text=True, timeout=120).stdout
