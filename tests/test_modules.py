"""Which modules a kernel carries, on small projects written for each test."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kernelgen.build.modules import KernelModules, collect_modules
from kernelgen.errors import RenderError, SourceSyntaxError

RUNTIME = ["kernelgen.runtime.errors", "kernelgen.runtime.cells", "kernelgen.runtime.layout", "kernelgen.runtime"]


def project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def collect(root: Path, module: str = "pkg.stage", packages: tuple[str, ...] = ("pkg",)) -> KernelModules:
    return collect_modules(module, root=root, packages=packages, stage=7)


def names(found: KernelModules) -> list[str]:
    return [m.name for m in found.modules]


A_MODULE = """
COLUMNS = ("a",)


def _check(x):
    return x > 0


def check_a(x):
    return _check(x)
"""


def test_two_modules_may_define_the_same_private_name(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/lib/__init__.py": "",
            "pkg/lib/a.py": A_MODULE,
            "pkg/lib/b.py": A_MODULE.replace('"a"', '"b"').replace("> 0", "< 0").replace("check_a", "check_b"),
            "pkg/stage.py": "from pkg.lib.a import check_a\nfrom pkg.lib.b import check_b\n\n_check = 3\n",
        },
    )
    found = collect(root)
    assert names(found) == ["pkg.lib.a", "pkg.lib.b", *RUNTIME]
    assert [m.file for m in found.modules[:2]] == ["pkg/lib/a.py", "pkg/lib/b.py"]
    assert found.packages == ("kernelgen", "kernelgen/runtime", "pkg", "pkg/lib")
    assert {"_check", "COLUMNS"} <= found.modules[0].names & found.modules[1].names
    assert "_check" in found.main.names


def test_dependencies_come_first_and_each_module_once(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "pkg/util.py": "from pkg.base import BASE\nHELP = BASE\n",
            "pkg/base.py": "BASE = 1\n",
            "pkg/other.py": "from pkg.base import BASE\n",
            "pkg/unused.py": "X = 1\n",
            "pkg/stage.py": "from pkg.util import HELP\nfrom pkg.other import BASE\nfrom pkg import base\n",
        },
    )
    found = names(collect(root))
    assert found == ["pkg.base", "pkg.util", "pkg.other", *RUNTIME]


def test_relative_imports_in_a_library_module_resolve(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "pkg/lib/__init__.py": "from .a import A\n",
            "pkg/lib/a.py": "from ..consts import N\nA = N\n",
            "pkg/consts.py": "N = 2\n",
            "pkg/stage.py": "from pkg.lib import A\n",
        },
    )
    found = names(collect(root))
    assert found.index("pkg.consts") < found.index("pkg.lib.a") < found.index("pkg.lib")


def test_a_package_init_with_code_is_carried_and_an_empty_one_is_made(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "pkg/__init__.py": "VERSION = 1\n",
            "pkg/lib/__init__.py": "",
            "pkg/lib/a.py": "A = 1\n",
            "pkg/stage.py": "from pkg.lib.a import A\n",
        },
    )
    found = collect(root)
    assert "pkg" in names(found) and "pkg.lib" not in names(found)
    assert [m.file for m in found.modules if m.name == "pkg"] == ["pkg/__init__.py"]
    assert "pkg/lib" in found.packages


def test_modules_importing_each_other_are_carried_once(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {"pkg/a.py": "import pkg.b\n", "pkg/b.py": "import pkg.a\n", "pkg/stage.py": "import pkg.a\n"},
    )
    assert names(collect(root)) == ["pkg.b", "pkg.a", *RUNTIME]


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"pkg/stage.py": "from .lib import x\n"}, "use absolute imports"),
        ({"pkg/stage.py": "from __future__ import annotations\n"}, "'from __future__' cannot be used in a stage module"),
        ({"pkg/stage.py": "from kernelgen.cli import main\n"}, "only kernelgen.runtime from kernelgen"),
        ({"pkg/stage.py": "import pkg.missing\n"}, "module 'pkg.missing' not found"),
        ({"pkg/stage.py": "from pkg.lib import nothing\n", "pkg/lib.py": "X = 1\n"}, "pkg.lib defines no top-level 'nothing'"),
        ({"pkg/stage.py": "from pkg.lib import X\n", "pkg/lib.py": "from ...x import y\n"}, "above the top-level package"),
    ],
)
def test_refused_with_file_and_reason(tmp_path: Path, files: dict[str, str], needle: str) -> None:
    root = project(tmp_path, files)
    with pytest.raises(RenderError, match=r"^stage 7: ") as info:
        collect(root)
    assert needle in str(info.value)


@pytest.mark.parametrize("broken", ["pkg/stage.py", "pkg/lib.py"])
def test_a_syntax_error_anywhere_is_one_line_naming_file_and_line(tmp_path: Path, broken: str) -> None:
    files = {"pkg/stage.py": "from pkg.lib import X\n", "pkg/lib.py": "X = 1\n"}
    files[broken] = files[broken] + "\ndef broken(:\n"
    root = project(tmp_path, files)
    with pytest.raises(SourceSyntaxError) as info:
        collect(root)
    assert str(info.value) == f"{root / broken}:3: syntax error: invalid syntax"


def test_a_stage_module_outside_the_packages_refused(tmp_path: Path) -> None:
    root = project(tmp_path, {"pkg/stage.py": "X = 1\n"})
    with pytest.raises(RenderError, match="not in the pipeline's packages"):
        collect(root, "other.stage")


def test_the_bundled_stage5_carries_its_library_and_the_runtime(repo_root: Path) -> None:
    found = collect_modules("stages.stage5_submission", root=repo_root, packages=("stages",), stage=5)
    carried = set(names(found))
    assert {"kernelgen.runtime", "kernelgen.runtime.layout", "stages.lib.scores", "stages.lib.submission"} <= carried
    assert not {"stages.lib.classifier", "stages.lib.segdata", "stages.synth"} & carried
