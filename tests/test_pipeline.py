"""The stage graph read from kernel-metadata/, and every way a declaration is refused.

The bundled wiring is checked against the seed pipeline (who reads whose outputs);
broken declarations are written into temporary folders and must fail with a
MetadataError that names the offending file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kernelgen.errors import MetadataError, UnknownStageError
from kernelgen.spec.machine import AcceleratorKind, DockerPinning, Session
from kernelgen.spec.pipeline import DatasetFile, Pipeline, Via, load_pipeline


@pytest.fixture(scope="module")
def bundled() -> Pipeline:
    return load_pipeline()


def stage_toml(number: int, extra: str = "") -> str:
    return (
        f'stage = {number}\nmodule = "stages.s{number}"\ntitle = "Stage number {number}"\n' + extra
    )


def write_metadata(folder: Path, stages: dict[int, str], datasets: str | None = None) -> Path:
    """`folder/kernel-metadata/` with these stages and datasets; returns that metadata folder."""
    meta = folder / "kernel-metadata"
    meta.mkdir(parents=True, exist_ok=True)
    for number, text in stages.items():
        (meta / f"stage{number}.toml").write_text(textwrap.dedent(text))
    if datasets is not None:
        (meta / "datasets.toml").write_text(textwrap.dedent(datasets))
    return meta


def refused(folder: Path) -> MetadataError:
    with pytest.raises(MetadataError) as info:
        load_pipeline(folder.parent)
    return info.value


# --- the bundled wiring -------------------------------------------------------------------


def test_bundled_stages_and_modules(bundled: Pipeline) -> None:
    assert list(bundled.stages) == [1, 2, 3, 4, 5, 6]
    assert bundled.default_stages == [1, 2, 3, 4, 5]  # [chain] last = 5: stage 6 only with --to 6
    assert bundled.stage(6).module == "stages.stage6_inference"
    assert bundled.stage(5).module == "stages.stage5_submission"
    assert bundled.stage(3).module == "stages.stage3_threshold"
    assert bundled.stage("2").name == "stage2"


def test_bundled_dependencies(bundled: Pipeline) -> None:
    assert bundled.dependencies == {1: (), 2: (1,), 3: (1, 2), 4: (), 5: (1, 2, 3, 4), 6: (1, 3, 4)}


def test_bundled_order_puts_producers_first(bundled: Pipeline) -> None:
    order = bundled.order()
    assert sorted(order) == [1, 2, 3, 4, 5, 6]
    for stage, needs in bundled.dependencies.items():
        assert all(order.index(n) < order.index(stage) for n in needs)
    assert bundled.order([5, 3]) == [3, 5]
    assert bundled.order([4, 2]) == [2, 4]


def test_order_of_a_selection_keeps_only_the_selected_stages(bundled: Pipeline) -> None:
    assert bundled.order([6, 1, 4]) == [1, 4, 6]
    assert bundled.order([5]) == [5]
    assert bundled.order([]) == []


def test_bundled_datasets(bundled: Pipeline) -> None:
    assert set(bundled.datasets) == {"stage1", "stage2", "stage4"}
    assert bundled.datasets["stage1"].files == (DatasetFile(1, "model.h5"), DatasetFile(1, "split.csv"))
    assert set(bundled.datasets["stage2"].files) == {
        DatasetFile(2, "train_missing_count.csv"),
        DatasetFile(1, "test_missing_count.csv"),
    }
    assert bundled.datasets["stage2"].stages == (1, 2)
    assert bundled.datasets["stage4"].files == (DatasetFile(4, "submission.csv"), DatasetFile(4, "model.pth"))


def test_bundled_flags(bundled: Pipeline) -> None:
    assert {n: s.enable_gpu for n, s in bundled.stages.items()} == {
        1: True,
        2: True,
        3: False,
        4: True,
        5: False,
        6: True,
    }
    assert {n: s.enable_internet for n, s in bundled.stages.items()} == {
        1: True,
        2: True,
        3: True,
        4: True,
        5: False,
        6: False,
    }
    for spec in bundled.stages.values():
        assert spec.competition_sources == ("severstal-steel-defect-detection",)
    threshold = bundled.stage(5).params_from["threshold"]
    assert (threshold.stage, threshold.file, threshold.key) == (3, "threshold.json", "threshold")
    assert [p.module for p in bundled.stage(4).pip] == ["segmentation_models_pytorch"]
    assert [p.module for p in bundled.stage(6).pip] == ["segmentation_models_pytorch"]
    assert bundled.stage(6).dataset_sources == ("stage4", "stage1")
    assert bundled.stage(6).params_from == bundled.stage(5).params_from


@pytest.mark.parametrize("bad", [0, 7, "x", None])
def test_unknown_stage_lists_the_known_ones(bundled: Pipeline, bad: object) -> None:
    with pytest.raises(UnknownStageError, match="known stages: 1, 2, 3, 4, 5, 6"):
        bundled.stage(bad)  # type: ignore[arg-type]


# --- declarations that must be refused ----------------------------------------------------


def test_minimal_folder_loads(tmp_path: Path) -> None:
    pipeline = load_pipeline(write_metadata(tmp_path, {1: stage_toml(1)}).parent)
    spec = pipeline.stage(1)
    assert (spec.kernel_type, spec.language, spec.is_private) == ("notebook", "python", True)
    assert (spec.enable_gpu, spec.enable_internet) == (False, True)
    assert pipeline.datasets == {}


def test_unknown_key(tmp_path: Path) -> None:
    folder = write_metadata(tmp_path, {1: stage_toml(1, "enable_gpus = true\n")})
    error = refused(folder)
    assert error.where == folder / "stage1.toml"
    assert "unknown key 'enable_gpus'" in str(error)
    assert "enable_gpu" in str(error)  # the known keys are listed


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('enable_gpu = "yes"\n', "enable_gpu"),
        ("title = 5\n", "title"),
        ('dataset_sources = "stage1"\n', "dataset_sources"),
        ("competition_sources = [1]\n", "competition_sources"),
    ],
)
def test_wrong_type(tmp_path: Path, line: str, key: str) -> None:
    base = stage_toml(1)
    if line.startswith("title"):
        base = base.replace('title = "Stage number 1"\n', "")
    folder = write_metadata(tmp_path, {1: base + line})
    error = refused(folder)
    assert str(folder / "stage1.toml") in str(error)
    assert repr(key) in str(error)


def test_bool_is_not_an_int_for_stage(tmp_path: Path) -> None:
    text = 'stage = true\nmodule = "stages.s1"\ntitle = "Stage number 1"\n'
    error = refused(write_metadata(tmp_path, {1: text}))
    assert "'stage' must be int" in str(error)


@pytest.mark.parametrize("missing", ["stage", "module", "title"])
def test_missing_key(tmp_path: Path, missing: str) -> None:
    lines = [
        line for line in stage_toml(1).splitlines(keepends=True) if not line.startswith(missing)
    ]
    folder = write_metadata(tmp_path, {1: "".join(lines)})
    error = refused(folder)
    assert f"missing key {missing!r}" in str(error)
    assert error.where == folder / "stage1.toml"


def test_stage_number_must_match_file_name(tmp_path: Path) -> None:
    folder = write_metadata(tmp_path, {2: stage_toml(3)})
    error = refused(folder)
    assert error.where == folder / "stage2.toml"


def test_invalid_toml(tmp_path: Path) -> None:
    folder = write_metadata(tmp_path, {1: "stage = = 1\n"})
    error = refused(folder)
    assert "invalid TOML" in str(error)
    assert error.where == folder / "stage1.toml"


def test_dataset_not_declared(tmp_path: Path) -> None:
    folder = write_metadata(
        tmp_path,
        {1: stage_toml(1), 2: stage_toml(2, 'dataset_sources = ["stage9"]\n')},
        '[stage1]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\n',
    )
    error = refused(folder)
    assert error.where == folder / "stage2.toml"
    assert "'stage9'" in str(error)


@pytest.mark.parametrize(
    "ref", ["a.csv", "stage1", "stagex/a.csv", "stage1/dir/a.csv", "stage1/", 3]
)
def test_dataset_file_ref_malformed(tmp_path: Path, ref: object) -> None:
    value = f'"{ref}"' if isinstance(ref, str) else str(ref)
    folder = write_metadata(
        tmp_path, {1: stage_toml(1)}, f'[stage1]\ntitle = "Data one"\nfiles = [{value}]\n'
    )
    error = refused(folder)
    assert error.where == folder / "datasets.toml"
    assert "stageN/<file name>" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        '[stage1]\ntitle = "Data one"\n',
        '[stage1]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\nlicense = "x"\n',
        '[stage1]\ntitle = "Data one"\nfiles = []\n',
        '[Stage_1]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\n',
        '[stage1]\ntitle = "Data one"\nfiles = ["stage7/a.csv"]\n',
    ],
)
def test_dataset_declaration_refused(tmp_path: Path, body: str) -> None:
    folder = write_metadata(tmp_path, {1: stage_toml(1)}, body)
    assert refused(folder).where == folder / "datasets.toml"


def test_params_from_unknown_stage(tmp_path: Path) -> None:
    extra = '[params_from.x]\nstage = 8\nfile = "t.json"\nkey = "x"\n'
    folder = write_metadata(tmp_path, {1: stage_toml(1, extra)})
    error = refused(folder)
    assert error.where == folder / "stage1.toml"
    assert "unknown stage 8" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        'stage = "three"\nfile = "t.json"\nkey = "x"\n',
        'stage = 1\nfile = 3\nkey = "x"\n',
        'stage = 1\nfile = "t.json"\n',
    ],
)
def test_params_from_entry_malformed(tmp_path: Path, body: str) -> None:
    folder = write_metadata(
        tmp_path, {1: stage_toml(1), 2: stage_toml(2, "[params_from.x]\n" + body)}
    )
    error = refused(folder)
    assert error.where == folder / "stage2.toml"
    assert "params_from.x" in str(error)


def test_pip_entry_needs_module_and_requirement(tmp_path: Path) -> None:
    folder = write_metadata(tmp_path, {1: stage_toml(1, '[[pip]]\nmodule = "x"\n')})
    assert refused(folder).where == folder / "stage1.toml"


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    assert "no stageN.toml" in str(refused(write_metadata(tmp_path / "empty", {})))
    with pytest.raises(MetadataError) as info:
        load_pipeline(tmp_path / "absent")
    assert info.value.where == tmp_path / "absent" / "kernel-metadata"


def _load_in_subprocess(folder: Path) -> subprocess.CompletedProcess[str]:
    """Load in a child process: a loader that loops forever fails the test, not hangs it."""
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from kernelgen.errors import MetadataError\nfrom kernelgen.spec.pipeline import load_pipeline\n"
        "try:\n    load_pipeline(Path(sys.argv[1]))\nexcept MetadataError as exc:\n"
        "    print(exc)\n    sys.exit(3)\n"
    )
    try:
        return subprocess.run(
            [sys.executable, "-c", code, str(folder)],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("load_pipeline did not return within 10 s (Pipeline.order loops on a cycle)")


def test_cycle_refused(tmp_path: Path) -> None:
    folder = write_metadata(
        tmp_path,
        {
            1: stage_toml(1, 'dataset_sources = ["dtwo"]\n'),
            2: stage_toml(2, 'dataset_sources = ["done"]\n'),
        },
        '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\n'
        '[dtwo]\ntitle = "Data two"\nfiles = ["stage2/b.csv"]\n',
    )
    result = _load_in_subprocess(folder)
    assert result.returncode == 3, result.stderr
    assert "cycle" in result.stdout
    assert str(folder) in result.stdout


def test_stage_reading_its_own_output_refused(tmp_path: Path) -> None:
    folder = write_metadata(
        tmp_path,
        {1: stage_toml(1, 'dataset_sources = ["done"]\n')},
        '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\n',
    )
    result = _load_in_subprocess(folder)
    assert result.returncode == 3, result.stderr
    assert str(folder) in result.stdout


# --- session settings ---------------------------------------------------------------------


def test_bundled_sessions(bundled: Pipeline) -> None:
    shapes = {n: s.session.accelerator for n, s in bundled.stages.items()}
    assert shapes == {1: "NvidiaTeslaT4", 2: "NvidiaTeslaT4", 3: None, 4: "NvidiaTeslaT4", 5: None, 6: "NvidiaTeslaT4"}
    for spec in bundled.stages.values():
        assert spec.session.pinning is DockerPinning.ORIGINAL
        assert 0 < spec.session.timeout_seconds <= 12 * 3600


def test_session_keys_are_read(tmp_path: Path) -> None:
    extra = (
        'accelerator = "nvidiah100"\ngpu_hours = 2\nsession_timeout_hours = 6\n'
        'docker_pinning = "latest"\ndocker_image = "gcr.io/kaggle-gpu-images/python@sha256:abc"\n'
    )
    spec = load_pipeline(write_metadata(tmp_path, {1: stage_toml(1, extra)}).parent).stage(1)
    assert spec.session == Session(
        accelerator="NvidiaH100",
        timeout_hours=6.0,
        pinning=DockerPinning.LATEST,
        docker_image="gcr.io/kaggle-gpu-images/python@sha256:abc",
    )
    assert spec.enable_gpu is True and spec.gpu_hours == 2.0


def test_a_gpu_stage_without_a_name_gets_the_default_and_a_tpu_is_no_gpu(tmp_path: Path) -> None:
    folder = write_metadata(
        tmp_path, {1: stage_toml(1, "enable_gpu = true\n"), 2: stage_toml(2, 'accelerator = "TpuV5E8"\n')}
    )
    pipeline = load_pipeline(folder.parent)
    assert pipeline.stage(1).session.accelerator == "NvidiaTeslaT4"
    assert pipeline.stage(2).session.kind is AcceleratorKind.TPU
    assert pipeline.stage(2).enable_gpu is False


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('accelerator = "NvidiaTeslaP100"\n', "retired: Kaggle runs such sessions on NvidiaTeslaT4"),
        ('accelerator = "TpuV38"\n', "on TpuV5E8 instead"),
        ('accelerator = "K80"\n', "unknown accelerator 'K80'"),
        ('accelerator = "NvidiaL4"\nenable_gpu = false\n', "is a GPU but enable_gpu is false"),
        ('accelerator = "TpuV6E8"\nenable_gpu = true\n', "is a TPU but enable_gpu is true"),
        ("gpu_hours = 1\n", "gpu_hours is an estimate for GPU stages"),
        ("enable_gpu = true\ngpu_hours = 0\n", "gpu_hours must be more than 0"),
        ("enable_gpu = true\ngpu_hours = 12\nsession_timeout_hours = 4\n", "at most session_timeout_hours (4)"),
        ("session_timeout_hours = 13\n", "at most the 12 h session cap"),
        ("session_timeout_hours = 0\n", "session_timeout_hours must be more than 0"),
        ('session_timeout_hours = "2h"\n', "'session_timeout_hours' must be a number"),
        ('docker_pinning = "newest"\n', "docker_pinning must be 'original' or 'latest'"),
        ('docker_image = " "\n', "docker_image must name an image"),
    ],
)
def test_session_settings_refused(tmp_path: Path, extra: str, needle: str) -> None:
    folder = write_metadata(tmp_path, {1: stage_toml(1, extra)})
    error = refused(folder)
    assert error.where == folder / "stage1.toml"
    assert needle in str(error)


# --- datasets read through a kernel's output ----------------------------------------------


def test_a_dataset_may_be_read_through_its_producing_kernel(tmp_path: Path) -> None:
    folder = write_metadata(
        tmp_path,
        {1: stage_toml(1), 2: stage_toml(2, 'dataset_sources = ["done"]\n')},
        '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\nvia = "kernel"\n',
    )
    pipeline = load_pipeline(folder.parent)
    assert pipeline.datasets["done"].via is Via.KERNEL
    assert pipeline.datasets["done"].producer == 1
    assert pipeline.dependencies[2] == (1,)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\nvia = "bucket"\n',
            "via must be 'dataset' or 'kernel' or 'model'",
        ),
        (
            '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\nvia = "model"\n',
            "a model needs 'framework', one of PyTorch",
        ),
        (
            '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\nvia = "model"\nframework = "Caffe"\n',
            "got 'Caffe'",
        ),
        (
            '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\nvia = "model"\nframework = "PyTorch"\n'
            'variation = "Big One"\n',
            "variation 'Big One' must be lowercase letters and digits",
        ),
        (
            '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv"]\nframework = "PyTorch"\n',
            "'framework' is for via = \"model\" only",
        ),
        (
            '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv", "stage2/b.csv"]\nvia = "model"\nframework = "Keras"\n',
            "must come from one stage",
        ),
        (
            '[done]\ntitle = "Data one"\nfiles = ["stage1/a.csv", "stage2/b.csv"]\nvia = "kernel"\n',
            "must come from one stage, not stages [1, 2]",
        ),
    ],
)
def test_kernel_wiring_refused(tmp_path: Path, body: str, needle: str) -> None:
    folder = write_metadata(tmp_path, {1: stage_toml(1), 2: stage_toml(2)}, body)
    error = refused(folder)
    assert error.where == folder / "datasets.toml"
    assert needle in str(error)


# --- [chain] in pipeline.toml -------------------------------------------------------------


def test_chain_last_sets_the_default_stages(tmp_path: Path) -> None:
    meta = write_metadata(tmp_path, {1: stage_toml(1), 2: stage_toml(2), 3: stage_toml(3)})
    assert load_pipeline(tmp_path).default_stages == [1, 2, 3]
    (meta / "pipeline.toml").write_text("[chain]\nlast = 2\n")
    assert load_pipeline(tmp_path).default_stages == [1, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[chain]\nlast = 9\n", "chain.last names unknown stage 9"),
        ('[chain]\nlast = "2"\n', "chain.last must be a stage number, got '2'"),
        ("[chain]\nfirst = 1\n", "[chain] takes only 'last'"),
    ],
)
def test_a_bad_chain_table_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    meta = write_metadata(tmp_path, {1: stage_toml(1), 2: stage_toml(2)})
    (meta / "pipeline.toml").write_text(text)
    error = refused(meta)
    assert message in str(error) and "\n" not in str(error)
