"""Collecting a stage module and the library modules it uses, on small fake `stages` trees."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from kernelgen.errors import RenderError
from kernelgen.inline import collect_units, read_unit


def tree(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (paths relative to a `stages` folder) and return that folder."""
    stages = root / "stages"
    for name, text in files.items():
        path = stages / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return stages


ERRORS = """
class InputError(Exception):
    pass
"""


def test_imports_stripped_and_the_rest_kept(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {
            "lib/errors.py": ERRORS,
            "lib/util.py": """
                import os

                from stages.lib.errors import InputError

                UTIL_ROOT = os.sep


                def helper() -> None:
                    raise InputError("x")
                """,
            "stage9.py": """
                # %%
                import json
                from stages.lib.util import helper
                from stages.lib.errors import (
                    InputError,
                )


                def run() -> None:
                    helper()
                """,
        },
    )
    libs, main = collect_units("stages.stage9", stages, 9)
    assert [u.module for u in libs] == ["stages.lib.errors", "stages.lib.util"]
    assert main.module == "stages.stage9"
    assert main.text == "# %%\nimport json\n\n\ndef run() -> None:\n    helper()\n"
    assert "from stages" not in libs[1].text
    assert "import os\n" in libs[1].text
    assert "def helper() -> None:" in libs[1].text
    assert main.imports == ("stages.lib.util", "stages.lib.errors")
    assert main.imported_names == (
        ("stages.lib.util", "helper"),
        ("stages.lib.errors", "InputError"),
    )
    assert main.names == {"run"}
    assert libs[1].names == {"UTIL_ROOT", "helper"}
    for unit in [*libs, main]:
        ast.parse(unit.text)


def test_dependencies_come_first(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {
            "lib/a.py": "A = 1\n",
            "lib/b.py": "from stages.lib.a import A\n\nB = A\n",
            "lib/c.py": "from stages.lib.b import B\nfrom stages.lib.a import A\n\nC = A + B\n",
            "lib/z.py": "from stages.lib.c import C\n\nZ = C\n",
            "stage9.py": "from stages.lib.z import Z\nfrom stages.lib.a import A\n\nMAIN = Z + A\n",
        },
    )
    libs, main = collect_units("stages.stage9", stages, 9)
    assert [u.module.rsplit(".", 1)[1] for u in libs] == ["a", "b", "c", "z"]
    assert main.names == {"MAIN"}


def test_each_library_module_is_inlined_once(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {
            "lib/a.py": "A = 1\n",
            "lib/b.py": "from stages.lib.a import A\n\nB = A\n",
            "stage9.py": "from stages.lib.a import A\nfrom stages.lib.b import B\n",
        },
    )
    libs, _ = collect_units("stages.stage9", stages, 9)
    assert [u.module for u in libs] == ["stages.lib.a", "stages.lib.b"]


def test_unused_library_modules_are_left_out(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {"lib/a.py": "A = 1\n", "lib/b.py": "B = 1\n", "stage9.py": "from stages.lib.b import B\n"},
    )
    libs, _ = collect_units("stages.stage9", stages, 9)
    assert [u.module for u in libs] == ["stages.lib.b"]


def test_name_clash_refused(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {
            "lib/a.py": "def load():\n    return 1\n",
            "stage9.py": "from stages.lib.a import load\n\n\ndef load():\n    return 2\n",
        },
    )
    with pytest.raises(
        RenderError, match=r"'load' is defined in both stages\.lib\.a and stages\.stage9"
    ):
        collect_units("stages.stage9", stages, 9)


def test_name_clash_between_libraries_refused(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {
            "lib/a.py": "SHAPE = (256, 1600)\n",
            "lib/b.py": "SHAPE: tuple = (1, 1)\n",
            "stage9.py": "from stages.lib.a import SHAPE\nfrom stages.lib.b import SHAPE\n",
        },
    )
    with pytest.raises(RenderError, match="stage 9: top-level name 'SHAPE'"):
        collect_units("stages.stage9", stages, 9)


def test_attribute_and_item_assignments_define_no_name(tmp_path: Path) -> None:
    """`pd.options.x = ...` in two modules sets options; it does not define `pd` twice."""
    stages = tree(
        tmp_path,
        {
            "lib/a.py": "import pandas as pd\n\nA_FLAG = True\npd.options.display.width = 120\n",
            "stage9.py": (
                "import pandas as pd\nfrom stages.lib.a import A_FLAG\n\n"
                "pd.options.mode.chained_assignment = None\nSETTINGS = {}\nSETTINGS['k'] = 1\n"
            ),
        },
    )
    libs, main = collect_units("stages.stage9", stages, 9)
    assert main.names == {"SETTINGS"}
    assert libs[0].names == {"A_FLAG"}


def test_tuple_targets_define_each_name(tmp_path: Path) -> None:
    stages = tree(tmp_path, {"stage9.py": "HEIGHT, (WIDTH, *REST) = 1, (2, 3)\n"})
    assert read_unit("stages.stage9", stages, 9).names == {"HEIGHT", "WIDTH", "REST"}


def test_cycle_refused(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {
            "lib/a.py": "from stages.lib.b import B\n\nA = 1\n",
            "lib/b.py": "from stages.lib.a import A\n\nB = 1\n",
            "stage9.py": "from stages.lib.a import A\n",
        },
    )
    with pytest.raises(
        RenderError, match=r"cycle: stages\.lib\.a -> stages\.lib\.b -> stages\.lib\.a"
    ):
        collect_units("stages.stage9", stages, 9)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("import stages.lib.a\n", "use 'from stages.lib.X import name'"),
        ("import stages\n", "use 'from stages.lib.X import name'"),
        ("import os, stages.lib.a as la\n", "use 'from stages.lib.X import name'"),
        ("from . import lib\n", "only 'from stages.lib.X import ...'"),
        ("from .lib.a import A\n", "only 'from stages.lib.X import ...'"),
        ("from stages.lib import a\n", "only 'from stages.lib.X import ...'"),
        ("from stages import lib\n", "only 'from stages.lib.X import ...'"),
        ("from stages.lib.a import A as B\n", "no 'as', no '*'"),
        ("from stages.lib.a import *\n", "no 'as', no '*'"),
        ("from __future__ import annotations\n", "'from __future__' cannot be inlined"),
        ("def f():\n    from stages.lib.a import A\n", "must be at top level"),
    ],
)
def test_import_forms_refused(tmp_path: Path, line: str, needle: str) -> None:
    stages = tree(tmp_path, {"lib/a.py": "A = 1\n", "stage9.py": "X = 0\n" + line})
    with pytest.raises(RenderError) as info:
        collect_units("stages.stage9", stages, 9)
    message = str(info.value)
    assert needle in message
    assert f"{stages / 'stage9.py'}:{1 + line.count(chr(10))}:" in message


def test_from_future_refused_in_a_library_module(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {
            "lib/a.py": "from __future__ import annotations\n\nA = 1\n",
            "stage9.py": "from stages.lib.a import A\n",
        },
    )
    with pytest.raises(RenderError, match=r"lib/a\.py:1: 'from __future__'"):
        collect_units("stages.stage9", stages, 9)


def test_importing_an_undefined_name_refused(tmp_path: Path) -> None:
    stages = tree(
        tmp_path,
        {"lib/a.py": "import os\n\nA = 1\n", "stage9.py": "from stages.lib.a import A, os\n"},
    )
    with pytest.raises(RenderError, match=r"stages\.lib\.a defines no top-level 'os'"):
        collect_units("stages.stage9", stages, 9)


def test_missing_module_named(tmp_path: Path) -> None:
    stages = tree(tmp_path, {"stage9.py": "from stages.lib.nothere import A\n"})
    with pytest.raises(
        RenderError, match=r"module 'stages\.lib\.nothere' not found at .*nothere\.py"
    ):
        collect_units("stages.stage9", stages, 9)
    with pytest.raises(RenderError, match="outside the 'stages' package"):
        collect_units("other.stage9", stages, 9)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    stages = tree(tmp_path, {"stage9.py": "X = 1\ndef broken(:\n"})
    with pytest.raises(RenderError, match=r"stage9\.py:2: syntax error"):
        collect_units("stages.stage9", stages, 9)


def test_real_stage5_units(repo_root: Path) -> None:
    libs, main = collect_units("stages.stage5_submission", repo_root / "stages", 5)
    modules = [u.module for u in libs]
    assert modules[0] == "stages.lib.errors"
    assert {"stages.lib.layout", "stages.lib.scores", "stages.lib.submission"} <= set(modules)
    for unit in [*libs, main]:
        assert "from stages" not in unit.text
        assert "import stages" not in unit.text
    assert {"Params", "run"} <= main.names
