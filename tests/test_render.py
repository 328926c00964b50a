"""Rendering stage modules into kernels: content, determinism, metadata, and the one writer.

Content checks use the real stage 5 (and stage 3 once its module and library
modules exist), plus a small fake stages tree for what the real stages do not
exercise (a pip cell, a stage without a markdown title, clashing names).
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
from slugify import slugify

from kernelgen.backends.execute import execute_notebook
from kernelgen.build.kernel import METADATA_FILE, RenderedKernel, write_kernels
from kernelgen.build.templating import comment, pyliteral
from kernelgen.errors import KernelgenError, MetadataError, ParameterError, RenderError
from kernelgen.spec.config import Config
from kernelgen.spec.pipeline import Via, load_pipeline
from kernelgen.spec.project import Project
from tests.rendering import render

USER = "tester"
PIP_INSTALL = '"-m", "pip", "install"'
PARAM_LINE = re.compile(r"^(?P<name>[A-Za-z_]\w*) = (?P<literal>.+?)  # (?P<source>.*)$")


def project(config: Config | None = None) -> Project:
    return Project(pipeline=load_pipeline(), config=config or Config())


def render_one(stage: int, **kwargs: object) -> RenderedKernel:
    config = kwargs.pop("config", None)
    return render(project(config), [stage], username=USER, **kwargs)[0]  # type: ignore[arg-type]


def notebook_of(kernel: RenderedKernel) -> nbformat.NotebookNode:
    return nbformat.reads(kernel.files[kernel.code_file].decode("utf-8"), as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def parameters_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert tagged[0].cell_type == "code"
    return tagged[0]


def parameter_lines(notebook: nbformat.NotebookNode) -> dict[str, tuple[object, str]]:
    found: dict[str, tuple[object, str]] = {}
    for line in parameters_cell(notebook).source.splitlines():
        if not line or line.startswith("#"):
            continue
        match = PARAM_LINE.match(line)
        assert match, f"parameters cell line {line!r} is not 'name = literal  # source'"
        found[match["name"]] = (ast.literal_eval(match["literal"]), match["source"])
    return found


# --- the real stages ---------------------------------------------------------------------


@pytest.mark.parametrize("stage", [3, 5])
def test_render_is_deterministic(stage: int) -> None:
    first = render_one(stage)
    second = render_one(stage)
    assert first.files == second.files
    assert first.digest == second.digest
    assert re.fullmatch(r"[0-9a-f]{64}", first.digest)


@pytest.mark.parametrize("profile", ["full", "smoke", "best", "kfold"])
def test_every_stage_renders_in_every_built_in_profile(profile: str) -> None:
    kernels = render(project(), [1, 2, 3, 4, 5, 6], username=USER, profile=profile)
    assert sorted({k.stage for k in kernels}) == [1, 2, 3, 4, 5, 6]


def test_kfold_profile_is_best_with_stage4_as_five_folds() -> None:
    pipeline = load_pipeline()
    for number, spec in pipeline.stages.items():
        assert spec.profiles.get("kfold", {}) == spec.profiles.get("best", {}), number
    kernels = render(project(), [1, 2, 3, 4, 5, 6], username=USER, profile="kfold")
    folders = [k.folder for k in kernels]
    assert folders == ["stage1", "stage2", "stage3", *(f"stage4-fold-{k}" for k in range(5)), "stage5", "stage6"]
    for k in range(5):
        text = kernels[3 + k].files["stage4.ipynb"].decode()
        assert f"fold = {k}  # matrix" in text and "n_folds = 5  # default" in text
        assert "tune_postprocess = True  # profile kfold" in text


def test_different_parameters_give_a_different_digest() -> None:
    default = render_one(5)
    changed = render_one(5, sets=["threshold=0.5"])
    assert default.digest != changed.digest
    assert default.files[METADATA_FILE] == changed.files[METADATA_FILE]


def test_different_user_changes_only_the_metadata() -> None:
    mine, yours = (render(project(), [5], username=u)[0] for u in ("first-user", "second-user"))
    assert mine.files[mine.code_file] == yours.files[yours.code_file]
    assert mine.files[METADATA_FILE] != yours.files[METADATA_FILE]


WRITEFILE = re.compile(r"^%%writefile (-a )?\{KERNEL_MODULES\}/(?P<file>\S+\.py)\n")


def written_files(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """What the kernel's `%%writefile` cells write into its module folder, by file."""
    files: dict[str, str] = {}
    for cell in notebook.cells:
        match = WRITEFILE.match(cell.source) if cell.cell_type == "code" else None
        if match:
            files[match["file"]] = files.get(match["file"], "") + cell.source[match.end():] + "\n"
    return files


@pytest.mark.parametrize("stage", [3, 5])
def test_notebook_is_valid_and_self_contained(stage: int) -> None:
    kernel = render_one(stage)
    notebook = notebook_of(kernel)
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) == (4, 5)
    assert set(notebook.metadata) == {"kernelspec", "language_info"}
    files = written_files(notebook)
    assert {"kernelgen/runtime/__init__.py", "kernelgen/runtime/layout.py"} <= set(files)
    sources = [*(c.source for c in notebook.cells if c.cell_type == "code" and not WRITEFILE.match(c.source)), *files.values()]
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in ("stages", "kernelgen"):
                    path = module.replace(".", "/")
                    assert f"{path}.py" in files or f"{path}/__init__.py" in files or path in (
                        "kernelgen", "stages", "stages/lib"
                    ), f"{module} is imported but the kernel does not carry it"
    for cell in notebook.cells:
        assert cell.metadata in ({}, {"tags": ["parameters"]})
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("stage", [3, 5])
def test_parameters_cell(stage: int) -> None:
    kernel = render_one(stage)
    lines = parameter_lines(notebook_of(kernel))
    as_written = {p.name: (list(p.value) if isinstance(p.value, tuple) else p.value, p.source) for p in kernel.params}
    assert lines == as_written
    assert all(source == "default" for _, source in lines.values())


def test_parameters_cell_stage5_values_and_labels() -> None:
    config = Config(path=Path("kernelgen.toml"), stages={5: {"threshold": 0.5}})
    kernel = render_one(5, config=config)
    assert parameter_lines(notebook_of(kernel)) == {
        "threshold": (0.5, "kernelgen.toml"),
        "class_thresholds": ([], "default"),
    }
    kernel = render_one(5, config=config, sets=["stage5.threshold=0.25"])
    assert parameter_lines(notebook_of(kernel)) == {
        "threshold": (0.25, "--set"),
        "class_thresholds": ([], "default"),
    }
    assert parameter_lines(notebook_of(render_one(5))) == {
        "threshold": (0.947, "default"),
        "class_thresholds": ([], "default"),
    }


@pytest.mark.parametrize("stage", [3, 5])
def test_last_cell_runs_the_stage(stage: int) -> None:
    kernel = render_one(stage)
    notebook = notebook_of(kernel)
    last = notebook.cells[-1]
    assert last.cell_type == "code"
    tree = ast.parse(last.source)
    assert len(tree.body) == 2
    assert ast.unparse(tree.body[0]) == "from kernelgen.runtime import Layout"
    call = tree.body[1].value  # type: ignore[attr-defined]
    assert isinstance(call, ast.Call) and ast.unparse(call.func) == "run"
    params_call, layout_call = call.args
    assert ast.unparse(layout_call) == "Layout.kaggle()"
    assert isinstance(params_call, ast.Call) and ast.unparse(params_call.func) == "Params"
    assert [(k.arg, ast.unparse(k.value)) for k in params_call.keywords] == [
        (p.name, f"tuple({p.name})" if isinstance(p.value, tuple) else p.name) for p in kernel.params
    ]


def test_cell_ids_are_stable() -> None:
    first = notebook_of(render_one(5))
    second = notebook_of(render_one(5, sets=["threshold=0.3"]))
    ids = [cell.id for cell in first.cells]
    assert ids == [f"stage5-{i:03d}" for i in range(len(ids))]
    assert ids == [cell.id for cell in second.cells]


def test_cell_order_title_provenance_parameters_libraries_stage_run() -> None:
    notebook = notebook_of(render_one(5))
    cells = notebook.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# Stage 5")
    assert cells[1].cell_type == "markdown" and "`stages.stage5_submission`" in cells[1].source
    assert "`full` profile" in cells[1].source
    assert cells[2].metadata.get("tags") == ["parameters"]
    sources = [c.source for c in cells]
    where = {
        name: next(
            i for i, s in enumerate(sources) if re.search(rf"^(class|def) {name}\b", s, re.M)
        )
        for name in (
            "InputError",
            "Layout",
            "read_scores",
            "read_submission",
            "blank_confident_images",
            "Params",
            "run",
        )
    }
    assert (
        where["InputError"]
        < where["Layout"]
        < where["read_submission"]
        < where["blank_confident_images"]
        < where["Params"]
        < where["run"]
        < len(cells) - 1
    )
    assert where["read_scores"] < where["Params"]


@pytest.mark.parametrize("stage", [1, 2, 3, 4, 5])
def test_kernel_metadata(stage: int) -> None:
    kernel = render_one(stage)
    meta = json.loads(kernel.files[METADATA_FILE])
    spec = load_pipeline().stage(stage)
    owner, slug = meta["id"].split("/")
    assert owner == USER
    assert slug == slugify(meta["title"]) == kernel.slug
    assert meta["title"] == spec.title
    assert meta["code_file"] == kernel.code_file == f"stage{stage}.ipynb"
    assert set(kernel.files) == {METADATA_FILE, kernel.code_file}
    assert meta["language"] == "python" and meta["kernel_type"] == "notebook"
    assert meta["is_private"] is True and meta["enable_tpu"] is False
    assert meta["enable_gpu"] is (stage in (1, 2, 4))
    assert meta["enable_internet"] is (stage != 5)
    assert meta["competition_sources"] == ["severstal-steel-defect-detection"]
    expected_sources = {1: [], 2: ["stage1"], 3: ["stage2"], 4: [], 5: ["stage4", "stage2"]}[stage]
    assert meta["dataset_sources"] == [f"{USER}/{s}" for s in expected_sources]
    assert meta["kernel_sources"] == []
    assert meta.get("machine_shape") == ("NvidiaTeslaT4" if stage in (1, 2, 4) else None)
    assert meta["session_timeout_seconds"] == 41400
    assert meta["docker_image_pinning_type"] == "original"
    assert "docker_image" not in meta


def test_another_accelerator_changes_the_metadata_and_the_digest() -> None:
    bundled = project()
    (t4,) = render(bundled, [4], username=USER)
    (h100,) = render(bundled, [4], username=USER, accelerators=bundled.accelerators(["4=NvidiaH100"], [4]))
    assert json.loads(h100.files[METADATA_FILE])["machine_shape"] == "NvidiaH100"
    assert h100.digest != t4.digest
    (tpu,) = render(bundled, [4], username=USER, accelerators={4: "TpuV5E8"})
    meta = json.loads(tpu.files[METADATA_FILE])
    assert (meta["enable_gpu"], meta["enable_tpu"], meta["machine_shape"]) == (False, True, "TpuV5E8")


@pytest.mark.parametrize(
    ("choices", "stages", "expected"),
    [
        (["NvidiaL4"], [1, 2, 3, 4, 5], {1: "NvidiaL4", 2: "NvidiaL4", 4: "NvidiaL4"}),
        (["NvidiaL4", "4=nvidiah100"], [1, 2, 3, 4, 5], {1: "NvidiaL4", 2: "NvidiaL4", 4: "NvidiaH100"}),
        (["stage2=TpuV6E8"], [2], {2: "TpuV6E8"}),
        ([], [1, 4], {}),
    ],
)
def test_accelerator_choices(choices: list[str], stages: list[int], expected: dict[int, str]) -> None:
    assert project().accelerators(choices, stages) == expected


@pytest.mark.parametrize(
    ("choices", "stages", "needle"),
    [
        (["4=NvidiaTeslaP100"], [4], "NvidiaTeslaP100 is retired"),
        (["NvidiaL4"], [3, 5], "stages 3, 5 run on a CPU"),
        (["5=NvidiaL4"], [1, 5], "stage 5 runs on a CPU"),
        (["9=NvidiaL4"], [1], "unknown stage '9'"),
    ],
)
def test_accelerator_choices_refused(choices: list[str], stages: list[int], needle: str) -> None:
    with pytest.raises(KernelgenError, match=needle):
        project().accelerators(choices, stages)


@pytest.mark.parametrize("stage", [3, 5])
def test_no_pip_cell_without_pip_requirements(stage: int) -> None:
    notebook = notebook_of(render_one(stage))
    assert not any(PIP_INSTALL in source for source in code_cells(notebook))


def test_stage4_pip_cell() -> None:
    notebook = notebook_of(render_one(4))
    pip_cells = [s for s in code_cells(notebook) if PIP_INSTALL in s]
    assert len(pip_cells) == 1
    assert "find_spec('segmentation_models_pytorch')" in pip_cells[0]
    index = next(i for i, c in enumerate(notebook.cells) if c.source == pip_cells[0])
    assert notebook.cells[index + 1].metadata.get("tags") == ["parameters"]


def test_rendering_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    render_one(5)
    assert list(tmp_path.iterdir()) == []


# --- a fake stages tree ------------------------------------------------------------------

FAKE_LIB = """
# %% [markdown]
# ## Helpers

# %%
def double(x):
    return 2 * x
"""

FAKE_STAGE = """
# %%
from dataclasses import dataclass

from stages.lib.helpers import double


@dataclass(frozen=True)
class Params:
    count: int = 2
    label: str = "it's \\"quoted\\"\\n"


# %%
def run(params, layout):
    print(double(params.count), params.label)
"""

FAKE_META = """
stage = 1
module = "stages.stage1_fake"
title = "Fake Stage One"
enable_internet = {internet}
dataset_sources = []

[[pip]]
module = "fancy_pkg"
requirement = "fancy-pkg>=1.2"
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    stages = tmp_path / "stages"
    (stages / "lib").mkdir(parents=True)
    (stages / "lib" / "helpers.py").write_text(textwrap.dedent(FAKE_LIB).lstrip())
    (stages / "stage1_fake.py").write_text(textwrap.dedent(FAKE_STAGE).lstrip())
    (tmp_path / "kernel-metadata").mkdir()
    (tmp_path / "kernel-metadata" / "stage1.toml").write_text(FAKE_META.format(internet="true"))
    return tmp_path


def fake_project(folder: Path) -> Project:
    return Project(pipeline=load_pipeline(folder), config=Config())


def test_fake_stage_pip_title_and_string_parameter(fake: Path) -> None:
    kernel = render(fake_project(fake), [1], username=USER)[0]
    notebook = notebook_of(kernel)
    nbformat.validate(notebook)
    assert notebook.cells[0].source == "# Fake Stage One"
    pip = notebook.cells[2]
    assert pip.cell_type == "code" and "parameters" not in pip.metadata.get("tags", [])
    assert "if importlib.util.find_spec('fancy_pkg') is None:" in pip.source
    assert "'fancy-pkg>=1.2'" in pip.source
    ast.parse(pip.source)
    assert parameter_lines(notebook) == {
        "count": (2, "default"),
        "label": ('it\'s "quoted"\n', "default"),
    }
    files = written_files(notebook)
    assert "def double(x):" in files["stages/lib/helpers.py"]
    assert any("from stages.lib.helpers import double" in source for source in code_cells(notebook))


def test_pip_without_internet_installs_from_the_wheel_house_only(fake: Path) -> None:
    (fake / "kernel-metadata" / "stage1.toml").write_text(FAKE_META.format(internet="false"))
    kernel = render(fake_project(fake), [1], username=USER)[0]
    meta = json.loads(kernel.files["kernel-metadata.json"])
    (house,) = meta["kernel_sources"]
    assert house.startswith(f"{USER}/") and "-wheels-" in house
    pip = next(s for s in code_cells(nbformat.reads(kernel.files[kernel.code_file].decode(), as_version=4)) if "pip" in s)
    assert '"--no-index", "--find-links", str(WHEELS), \'fancy-pkg>=1.2\'' in pip
    assert pip.count('"install"') == 1


LIST_STAGE = """
# %%
from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    weights: tuple[float, ...] = (1.0,)
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not all(w > 0 for w in self.weights):
            raise ValueError(f"weights must be positive, got {list(self.weights)}")


# %%
def run(params, layout):
    print(type(params.weights).__name__, params.weights, params.names)
"""


@pytest.mark.slow
def test_a_list_parameter_is_a_list_literal_in_the_cell_and_a_tuple_in_the_run(
    fake: Path, tmp_path: Path
) -> None:
    (fake / "stages" / "stage1_fake.py").write_text(textwrap.dedent(LIST_STAGE).lstrip())
    meta = fake / "kernel-metadata" / "stage1.toml"
    meta.write_text(meta.read_text().split("[[pip]]")[0])
    kernel = render(fake_project(fake), [1], username=USER, sets=["weights=[0.5, 2]", 'names=["a", "b"]'])[0]
    notebook = notebook_of(kernel)
    assert parameter_lines(notebook) == {"weights": ([0.5, 2.0], "--set"), "names": (["a", "b"], "--set")}
    assert "weights=tuple(weights)," in code_cells(notebook)[-1]
    result = execute_notebook(kernel.files[kernel.code_file], tmp_path / "root", packages=("stages",))
    assert result.ok, result.log
    assert "tuple (0.5, 2.0) ('a', 'b')" in result.log
    with pytest.raises(ParameterError, match=r"stage 1: weights must be positive, got \[0.5, -1.0\]"):
        render(fake_project(fake), [1], username=USER, sets=["weights=[0.5, -1]"])
    with pytest.raises(ParameterError, match=r"weights=\[0.5, 2\]; got '0.5,2'"):
        render(fake_project(fake), [1], username=USER, sets=["weights=0.5,2"])


def test_parameter_clashing_with_inlined_name_refused(fake: Path) -> None:
    path = fake / "stages" / "stage1_fake.py"
    path.write_text(path.read_text().replace("count: int = 2", "double: int = 2"))
    with pytest.raises(RenderError, match=r"stage 1: parameter names \['double'\] clash"):
        render(fake_project(fake), [1], username=USER)


def test_invalid_username_refused(fake: Path) -> None:
    with pytest.raises(MetadataError, match="Kaggle username 'no spaces' is not valid"):
        render(fake_project(fake), [1], username="no spaces")


def test_title_that_does_not_give_the_slug_cannot_happen(fake: Path) -> None:
    """The id is made from the title, so the two always agree; a short title is refused."""
    meta = fake / "kernel-metadata" / "stage1.toml"
    meta.write_text(meta.read_text().replace('"Fake Stage One"', '"Fake"'))
    with pytest.raises(MetadataError, match="at least five characters"):
        render(fake_project(fake), [1], username=USER)


# --- templating filters ------------------------------------------------------------------


ROUND_TRIPS = [0, -3, 10**20, 0.1, 1e-300, -2.5e10, True, False, None]
ROUND_TRIPS += ["", "a'b\"c", "line\nbreak\\", "é ✓"]


@pytest.mark.parametrize("value", ROUND_TRIPS)
def test_pyliteral_round_trips(value: object) -> None:
    text = pyliteral(value)
    assert "\n" not in text
    back = ast.literal_eval(text)
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("value", [[], [1, 2.5, "a", None, True], (0.5, 0.75), ("x",)])
def test_pyliteral_writes_lists_and_tuples_as_list_literals(value: object) -> None:
    text = pyliteral(value)
    assert text.startswith("[") and "\n" not in text
    assert ast.literal_eval(text) == list(value)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), [[1]], [float("nan")], [b"x"], {"a": 1}, b"x", object(), Path("x")],
)
def test_pyliteral_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        pyliteral(value)


def test_comment_is_one_line() -> None:
    assert comment("profile smoke\nin   kernelgen.toml\r\n") == "profile smoke in kernelgen.toml"
    assert comment("a\tb\x0bc\x0cd") == "a b c d"
    assert comment(3) == "3"


def test_nan_parameter_refused_by_the_template() -> None:
    from kernelgen.build.templating import render_template
    from kernelgen.spec.params import ParamValue

    with pytest.raises(
        RenderError, match=r"stage 5, template parameters\.py\.j2: nan has no Python literal"
    ):
        render_template(
            "parameters.py.j2", stage=5, params=[ParamValue("x", float("nan"), "default")]
        )


def test_missing_template_variable_named() -> None:
    from kernelgen.build.templating import render_template

    with pytest.raises(RenderError, match=r"stage 2, template run\.py\.j2: 'params' is undefined"):
        render_template("run.py.j2", stage=2)
    with pytest.raises(RenderError, match=r"template nope\.j2: template not found"):
        render_template("nope.j2")


# --- the writer --------------------------------------------------------------------------


def kernel(stage: int, files: dict[str, bytes]) -> RenderedKernel:
    return RenderedKernel(
        stage=stage, kernel_id=f"u/k{stage}", code_file="k.ipynb", files=files, params=()
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


def test_write_kernels(tmp_path: Path) -> None:
    out = tmp_path / "out" / "kernels"
    (out / "stage5").mkdir(parents=True)
    (out / "stage5" / "stale.txt").write_text("old")
    (out / "stage9").mkdir()
    (out / "stage9" / "keep.txt").write_text("not ours")
    written = write_kernels(
        [kernel(3, {"a.json": b"3a", "k.ipynb": b"3k"}), kernel(5, {"k.ipynb": b"5"})], out
    )
    assert written == [out / "stage3", out / "stage5"]
    assert snapshot(out) == {
        "stage3": b"<dir>",
        "stage3/a.json": b"3a",
        "stage3/k.ipynb": b"3k",
        "stage5": b"<dir>",
        "stage5/k.ipynb": b"5",
        "stage9": b"<dir>",
        "stage9/keep.txt": b"not ours",
    }


def test_write_real_kernel(tmp_path: Path) -> None:
    rendered = render_one(5)
    (folder,) = write_kernels([rendered], tmp_path / "out")
    assert folder == tmp_path / "out" / "stage5"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == dict(rendered.files)
    nbformat.validate(nbformat.read(folder / "stage5.ipynb", as_version=4))


def existing_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "stage5").mkdir(parents=True)
    (out / "stage5" / "k.ipynb").write_bytes(b"previous render")
    return out


def test_write_failure_leaves_out_unchanged(tmp_path: Path) -> None:
    out = existing_out(tmp_path)
    before = snapshot(out)
    kernels = [kernel(5, {"k.ipynb": b"new"}), kernel(3, {"k.ipynb": b"3", "sub/x.txt": b"x"})]
    with pytest.raises(OSError):
        write_kernels(kernels, out)
    assert snapshot(out) == before


def test_write_failure_midway_leaves_out_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = existing_out(tmp_path)
    before = snapshot(out)
    calls = []
    original = Path.write_bytes

    def failing(self: Path, data: bytes) -> int:
        calls.append(self.name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)
    kernels = [kernel(5, {"k.ipynb": b"new", "a.json": b"{}"}), kernel(3, {"k.ipynb": b"3"})]
    with pytest.raises(OSError, match="No space left"):
        write_kernels(kernels, out)
    monkeypatch.undo()
    assert len(calls) == 3
    assert snapshot(out) == before


def test_write_failure_creates_no_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    with pytest.raises(OSError):
        write_kernels([kernel(5, {"sub/x.txt": b"x"})], out)
    assert not out.exists()


def kernel_wired(*slugs: str) -> Project:
    bundled = project()
    datasets = dict(bundled.pipeline.datasets)
    for slug in slugs:
        datasets[slug] = replace(datasets[slug], via=Via.KERNEL)
    return replace(bundled, pipeline=replace(bundled.pipeline, datasets=datasets))


def test_a_dataset_read_through_its_kernel_becomes_a_kernel_source_and_an_alias() -> None:
    wired = kernel_wired("stage4")
    (stage5,) = render(wired, [5], username=USER, kernel_versions={"4": 3})
    meta = json.loads(stage5.files[METADATA_FILE])
    assert meta["dataset_sources"] == [f"{USER}/stage2"]
    assert meta["kernel_sources"] == [f"{USER}/severstal-stage4-segmentation/3"]
    run_cell = code_cells(notebook_of(stage5))[-1]
    assert "Layout.kaggle(\n        aliases={\n            'stage4': 'severstal-stage4-segmentation',\n" in run_cell
    (latest,) = render(wired, [5], username=USER)
    assert json.loads(latest.files[METADATA_FILE])["kernel_sources"] == [f"{USER}/severstal-stage4-segmentation"]
    assert latest.digest != stage5.digest
    (plain,) = render(project(), [5], username=USER)
    assert code_cells(notebook_of(plain))[-1].endswith("    Layout.kaggle(),\n)")
