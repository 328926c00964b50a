"""The declarative wiring in kernel-metadata/: stages, the datasets between them, and the graph.

The graph is derived from what each stage reads (datasets, parameters taken from
another stage's output); nothing states a dependency twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from kernelgen.errors import AcceleratorError, MetadataError, UnknownStageError
from kernelgen.spec.machine import (
    DEFAULT_GPU,
    AcceleratorKind,
    DockerPinning,
    Session,
    accelerator,
    check_timeout_hours,
)
from kernelgen.spec.matrix import MATRIX_KEY, Matrix, parse_matrix
from kernelgen.spec.resources import bundled_project
from kernelgen.spec.tomlfile import read_toml

METADATA_DIR = "kernel-metadata"
PIPELINE_FILE = "pipeline.toml"

_STAGE_FILE = re.compile(r"^stage(\d+)\.toml$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
_FILE_REF = re.compile(r"^stage(\d+)/([^/]+)$")

_NUMBER = (int, float)
_STAGE_KEYS: dict[str, type | tuple[type, ...]] = {
    "stage": int,
    "module": str,
    "title": str,
    "kernel_type": str,
    "language": str,
    "is_private": bool,
    "enable_gpu": bool,
    "enable_internet": bool,
    "accelerator": str,
    "gpu_hours": _NUMBER,
    "session_timeout_hours": _NUMBER,
    "docker_pinning": str,
    "docker_image": str,
    "competition_sources": list,
    "dataset_sources": list,
    "pip": list,
    "params_from": dict,
    "profiles": dict,
    "matrix": dict,
}
_REQUIRED_STAGE_KEYS = ("stage", "module", "title")


@dataclass(frozen=True)
class PipRequirement:
    """A package the Kaggle image lacks: installed when `module` cannot be imported."""

    module: str
    requirement: str


@dataclass(frozen=True)
class ParamFrom:
    """A parameter whose value comes from a key of a JSON file another stage writes."""

    stage: int
    file: str
    key: str


@dataclass(frozen=True)
class StageSpec:
    number: int
    module: str
    title: str
    source: Path
    kernel_type: str = "notebook"
    language: str = "python"
    is_private: bool = True
    enable_gpu: bool = False
    enable_internet: bool = True
    competition_sources: tuple[str, ...] = ()
    dataset_sources: tuple[str, ...] = ()
    pip: tuple[PipRequirement, ...] = ()
    params_from: Mapping[str, ParamFrom] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    session: Session = field(default_factory=Session)
    gpu_hours: float | None = None
    matrix: Matrix = ()
    profile_matrices: Mapping[str, Matrix] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"stage{self.number}"


@dataclass(frozen=True)
class DatasetFile:
    stage: int
    name: str


class Via(str, Enum):
    """How consumers read a dataset: a published Kaggle dataset; the producing kernel's
    output version itself (`kernel_sources`), which needs no upload and no processing
    wait; or a version of a Kaggle Model instance (`model_sources`)."""

    DATASET = "dataset"
    KERNEL = "kernel"
    MODEL = "model"


MODEL_FRAMEWORKS = {
    name.lower(): name
    for name in (
        "PyTorch", "TensorFlow1", "TensorFlow2", "TfLite", "TfJs", "Keras", "Jax", "Flax",
        "ScikitLearn", "Transformers", "Onnx", "MxNet", "Gguf", "Ggml", "Coral", "Other",
    )
}
"""Kaggle's model frameworks a kernelgen model may be, by the lower-case name Kaggle's
model handles and mount paths use."""

_INSTANCE_SLUG = re.compile(r"^[a-z0-9]+(?:[_-][a-z0-9]+)*$")


@dataclass(frozen=True)
class DatasetSpec:
    """A set of stage outputs that later stages read. `framework` and `variation` are a
    model's (`via = "model"`): the model instance its versions belong to."""

    slug: str
    title: str
    files: tuple[DatasetFile, ...]
    via: Via = Via.DATASET
    framework: str = ""
    variation: str = "default"

    @property
    def stages(self) -> tuple[int, ...]:
        return tuple(sorted({f.stage for f in self.files}))

    @property
    def producer(self) -> int:
        """The one stage whose kernel output a `via = "kernel"` dataset (or a model) is."""
        return self.stages[0]

    def model_instance(self, owner: str) -> str:
        """`owner/model/framework/variation`: the model instance a `via = "model"` entry
        publishes versions of (a reader names one as `.../<version>`)."""
        return f"{owner}/{self.slug}/{self.framework}/{self.variation}"


@dataclass(frozen=True)
class LocalData:
    """How `--local` runs get competition data: a generator `module:function` and its options."""

    generator: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportHooks:
    """What the pipeline adds to `kernelgen report`: `panels` names a `module:function`
    that returns the pipeline's own panels; `validation` the metric (`stageN.<name>`)
    the runs panel plots against the public score."""

    panels: str | None = None
    validation: str | None = None


@dataclass(frozen=True)
class Pipeline:
    """A project folder: `kernel-metadata/` and the package(s) of stage modules beside it."""

    stages: Mapping[int, StageSpec]
    datasets: Mapping[str, DatasetSpec]
    source: Path
    root: Path = Path(".")
    local: LocalData = field(default_factory=LocalData)
    report: ReportHooks = field(default_factory=ReportHooks)
    default_last: int | None = None

    @property
    def default_stages(self) -> list[int]:
        """What `kernelgen chain` runs without --to: every stage up to [chain] last, if set."""
        last = self.default_last if self.default_last is not None else max(self.stages)
        return [n for n in self.stages if n <= last]

    @property
    def profile_names(self) -> set[str]:
        """The profiles the stages declare (`[profiles.NAME]` in a stage's metadata)."""
        return {name for spec in self.stages.values() for name in (*spec.profiles, *spec.profile_matrices)}

    @property
    def packages(self) -> tuple[str, ...]:
        """The top-level packages holding the stage modules: what kernels carry of the project."""
        return tuple(sorted({spec.module.split(".")[0] for spec in self.stages.values()}))

    def module_path(self, module: str) -> Path:
        base = self.root.joinpath(*module.split("."))
        return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")

    def stage(self, number: int | str) -> StageSpec:
        try:
            key = int(number)
        except (TypeError, ValueError):
            raise UnknownStageError(number, sorted(self.stages)) from None
        if key not in self.stages:
            raise UnknownStageError(number, sorted(self.stages))
        return self.stages[key]

    @cached_property
    def dependencies(self) -> dict[int, tuple[int, ...]]:
        """Stages each stage needs finished first: producers of its datasets and parameters."""
        deps: dict[int, tuple[int, ...]] = {}
        for number, spec in self.stages.items():
            needed: set[int] = set()
            for slug in spec.dataset_sources:
                needed.update(self.datasets[slug].stages)
            needed.update(p.stage for p in spec.params_from.values())
            deps[number] = tuple(sorted(needed))
        return deps

    def order(self, selected: Iterable[int] | None = None) -> list[int]:
        """Stages in an order where each comes after what it needs (ties by number)."""
        wanted = set(self.stages if selected is None else selected)
        sorter = TopologicalSorter({n: [d for d in self.dependencies[n] if d in wanted] for n in sorted(wanted)})
        sorter.prepare()
        done: list[int] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            done.extend(ready)
            sorter.done(*ready)
        return done



def _check_type(value: Any, expected: type | tuple[type, ...], key: str, where: Path) -> None:
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if not ok:
        name = "a number" if expected == _NUMBER else getattr(expected, "__name__", str(expected))
        raise MetadataError(f"{key!r} must be {name}, got {value!r}", where=where)


def _str_list(value: list[Any], key: str, where: Path) -> tuple[str, ...]:
    if not all(isinstance(v, str) and v for v in value):
        raise MetadataError(f"{key!r} must be a list of non-empty strings", where=where)
    return tuple(value)


def _load_toml(path: Path) -> dict[str, Any]:
    return read_toml(path, lambda message: MetadataError(message, where=path))


def _parse_session(raw: dict[str, Any], path: Path) -> tuple[Session, float | None]:
    """The stage's session settings and its GPU-hours estimate, checked against each other."""
    name = raw.get("accelerator")
    shape: str | None = None
    if name is not None:
        try:
            chosen = accelerator(name)
        except AcceleratorError as exc:
            raise MetadataError(str(exc), where=path) from None
        gpu = chosen.kind is AcceleratorKind.GPU
        if "enable_gpu" in raw and raw["enable_gpu"] is not gpu:
            kind = "a GPU" if gpu else "a TPU"
            raise MetadataError(
                f"accelerator {chosen.name} is {kind} but enable_gpu is {str(raw['enable_gpu']).lower()}",
                where=path,
            )
        shape = chosen.name
    elif raw.get("enable_gpu", False):
        shape = DEFAULT_GPU
    timeout = float(raw.get("session_timeout_hours", Session.timeout_hours))
    problem = check_timeout_hours(timeout)
    if problem:
        raise MetadataError(f"session_timeout_hours {problem}", where=path)
    pinning = raw.get("docker_pinning", DockerPinning.ORIGINAL.value)
    if pinning not in {p.value for p in DockerPinning}:
        known = " or ".join(repr(p.value) for p in DockerPinning)
        raise MetadataError(f"docker_pinning must be {known}, got {pinning!r}", where=path)
    image = raw.get("docker_image")
    if image is not None and not image.strip():
        raise MetadataError("docker_image must name an image", where=path)
    session = Session(accelerator=shape, timeout_hours=timeout, pinning=DockerPinning(pinning), docker_image=image)
    gpu_hours = raw.get("gpu_hours")
    if gpu_hours is not None:
        if session.kind is not AcceleratorKind.GPU:
            raise MetadataError("gpu_hours is an estimate for GPU stages; this stage runs without a GPU", where=path)
        if not 0 < gpu_hours <= timeout:
            raise MetadataError(
                f"gpu_hours must be more than 0 and at most session_timeout_hours ({timeout:g}), got {gpu_hours:g}",
                where=path,
            )
        gpu_hours = float(gpu_hours)
    return session, gpu_hours


def _parse_stage(path: Path, number: int) -> StageSpec:
    raw = _load_toml(path)
    for key in _REQUIRED_STAGE_KEYS:
        if key not in raw:
            raise MetadataError(f"missing key {key!r}", where=path)
    for key, value in raw.items():
        if key not in _STAGE_KEYS:
            raise MetadataError(
                f"unknown key {key!r} (known: {', '.join(sorted(_STAGE_KEYS))})", where=path
            )
        _check_type(value, _STAGE_KEYS[key], key, path)
    if raw["stage"] != number:
        raise MetadataError(f"'stage' is {raw['stage']} but the file is named for stage {number}", where=path)
    pip = []
    for item in raw.get("pip", []):
        if not isinstance(item, dict) or set(item) != {"module", "requirement"}:
            raise MetadataError("each [[pip]] entry needs exactly 'module' and 'requirement'", where=path)
        pip.append(PipRequirement(str(item["module"]), str(item["requirement"])))
    params_from = {}
    for name, item in raw.get("params_from", {}).items():
        if (
            not isinstance(item, dict)
            or set(item) != {"stage", "file", "key"}
            or type(item["stage"]) is not int
            or not all(isinstance(item[k], str) and item[k] for k in ("file", "key"))
        ):
            raise MetadataError(
                f"params_from.{name} needs exactly 'stage' (an int), 'file' and 'key' (strings)",
                where=path,
            )
        params_from[name] = ParamFrom(item["stage"], item["file"], item["key"])
    profiles = {}
    profile_matrices = {}
    for profile, values in raw.get("profiles", {}).items():
        if not isinstance(values, dict):
            raise MetadataError(f"profiles.{profile} must be a table of parameter values", where=path)
        profiles[profile] = {k: v for k, v in values.items() if k != MATRIX_KEY}
        if MATRIX_KEY in values:
            label = f"profiles.{profile}.{MATRIX_KEY}"
            profile_matrices[profile] = parse_matrix(values[MATRIX_KEY], label=label, where=path)
    session, gpu_hours = _parse_session(raw, path)
    return StageSpec(
        number=number,
        module=raw["module"],
        title=raw["title"],
        source=path,
        kernel_type=raw.get("kernel_type", "notebook"),
        language=raw.get("language", "python"),
        is_private=raw.get("is_private", True),
        enable_gpu=session.kind is AcceleratorKind.GPU,
        enable_internet=raw.get("enable_internet", True),
        competition_sources=_str_list(raw.get("competition_sources", []), "competition_sources", path),
        dataset_sources=_str_list(raw.get("dataset_sources", []), "dataset_sources", path),
        pip=tuple(pip),
        params_from=params_from,
        profiles=profiles,
        session=session,
        gpu_hours=gpu_hours,
        matrix=parse_matrix(raw[MATRIX_KEY], label=MATRIX_KEY, where=path) if MATRIX_KEY in raw else (),
        profile_matrices=profile_matrices,
    )


_DATASET_KEYS = {"title", "files", "via", "framework", "variation"}


def _parse_datasets(path: Path) -> dict[str, DatasetSpec]:
    if not path.is_file():
        return {}
    raw = _load_toml(path)
    datasets = {}
    for slug, body in raw.items():
        if not isinstance(body, dict) or not {"title", "files"} <= set(body) <= _DATASET_KEYS:
            raise MetadataError(
                f"dataset {slug!r} needs 'title' and 'files', and takes 'via' (and for a model, "
                "'framework' and 'variation')",
                where=path,
            )
        if not _SLUG.match(slug):
            raise MetadataError(f"dataset slug {slug!r} must be lowercase letters, digits and dashes", where=path)
        files = []
        for ref in body["files"]:
            match = _FILE_REF.match(ref) if isinstance(ref, str) else None
            if not match:
                raise MetadataError(f"dataset {slug!r}: file {ref!r} must read 'stageN/<file name>'", where=path)
            files.append(DatasetFile(int(match.group(1)), match.group(2)))
        if not files:
            raise MetadataError(f"dataset {slug!r} lists no files", where=path)
        via = body.get("via", Via.DATASET.value)
        if via not in {v.value for v in Via}:
            known = " or ".join(repr(v.value) for v in Via)
            raise MetadataError(f"dataset {slug!r}: via must be {known}, got {via!r}", where=path)
        spec = DatasetSpec(
            slug=slug,
            title=str(body["title"]),
            files=tuple(files),
            via=Via(via),
            **_model_fields(slug, body, path),
        )
        if spec.via is not Via.DATASET and len(spec.stages) != 1:
            raise MetadataError(
                f'dataset {slug!r} is read through a kernel\'s output or a model (via = "{via}"), so '
                f"its files must come from one stage, not stages {list(spec.stages)}",
                where=path,
            )
        datasets[slug] = spec
    return datasets


def _model_fields(slug: str, body: Mapping[str, Any], path: Path) -> dict[str, str]:
    """`framework` (required) and `variation` of a `via = "model"` entry, checked."""
    if body.get("via") != Via.MODEL.value:
        extra = sorted({"framework", "variation"} & set(body))
        if extra:
            raise MetadataError(
                f'dataset {slug!r}: {extra[0]!r} is for via = "model" only', where=path
            )
        return {}
    framework = body.get("framework")
    if not isinstance(framework, str) or framework.lower() not in MODEL_FRAMEWORKS:
        known = ", ".join(MODEL_FRAMEWORKS.values())
        raise MetadataError(
            f"dataset {slug!r}: a model needs 'framework', one of {known}; got {framework!r}",
            where=path,
        )
    variation = body.get("variation", "default")
    if not isinstance(variation, str) or not _INSTANCE_SLUG.match(variation):
        raise MetadataError(
            f"dataset {slug!r}: variation {variation!r} must be lowercase letters and digits, "
            "joined by single dashes or underscores",
            where=path,
        )
    return {"framework": framework.lower(), "variation": variation}


def _check_graph(stages: Mapping[int, StageSpec], datasets: Mapping[str, DatasetSpec], where: Path) -> None:
    for spec in stages.values():
        for slug in spec.dataset_sources:
            if slug not in datasets:
                raise MetadataError(
                    f"stage {spec.number} reads dataset {slug!r}, which datasets.toml does not declare",
                    where=spec.source,
                )
        for name, ref in spec.params_from.items():
            if ref.stage not in stages:
                raise MetadataError(f"params_from.{name} names unknown stage {ref.stage}", where=spec.source)
    for dataset in datasets.values():
        for item in dataset.files:
            if item.stage not in stages:
                raise MetadataError(f"dataset {dataset.slug!r} takes a file from unknown stage {item.stage}", where=where)
    pipeline = Pipeline(stages=stages, datasets=datasets, source=where)
    for number, needs in pipeline.dependencies.items():
        if number in needs:
            raise MetadataError(f"stage {number} reads its own outputs", where=stages[number].source)
    try:
        TopologicalSorter(pipeline.dependencies).prepare()
    except CycleError as exc:
        cycle = " -> ".join(f"stage {n}" for n in exc.args[1])
        raise MetadataError(f"stages depend on each other in a cycle: {cycle}", where=where) from None


_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_METRIC = re.compile(r"^stage\d+\.[A-Za-z_][A-Za-z0-9_.-]*$")


def _hook(value: Any, key: str, path: Path) -> str:
    """A `package.module:function` reference, checked for shape only (nothing is imported)."""
    module, sep, function = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not _MODULE.match(module) or not function.isidentifier():
        raise MetadataError(f"{key} must read 'package.module:function', got {value!r}", where=path)
    return value


def _parse_local(raw: dict[str, Any], path: Path) -> LocalData:
    local = raw.get("local", {})
    if not isinstance(local, dict) or set(local) - {"generator", "options"}:
        raise MetadataError("[local] takes only 'generator' and [local.options]", where=path)
    generator = local.get("generator")
    if generator is not None:
        _hook(generator, "local.generator", path)
    options = local.get("options", {})
    if not isinstance(options, dict):
        raise MetadataError("[local.options] must be a table of generator arguments", where=path)
    return LocalData(generator=generator, options=dict(options))


def _parse_report(raw: dict[str, Any], path: Path) -> ReportHooks:
    report = raw.get("report", {})
    if not isinstance(report, dict) or set(report) - {"panels", "validation"}:
        raise MetadataError("[report] takes only 'panels' and 'validation'", where=path)
    panels = report.get("panels")
    validation = report.get("validation")
    if validation is not None and (not isinstance(validation, str) or not _METRIC.match(validation)):
        raise MetadataError(f"report.validation must name a metric as 'stageN.name', got {validation!r}", where=path)
    return ReportHooks(panels=None if panels is None else _hook(panels, "report.panels", path), validation=validation)


def _parse_chain(raw: dict[str, Any], path: Path) -> int | None:
    chain = raw.get("chain", {})
    if not isinstance(chain, dict) or set(chain) - {"last"}:
        raise MetadataError("[chain] takes only 'last'", where=path)
    last = chain.get("last")
    if last is not None and type(last) is not int:
        raise MetadataError(f"chain.last must be a stage number, got {last!r}", where=path)
    return last


def _parse_pipeline_file(path: Path) -> tuple[LocalData, ReportHooks, int | None]:
    if not path.is_file():
        return LocalData(), ReportHooks(), None
    raw = _load_toml(path)
    unknown = sorted(set(raw) - {"local", "report", "chain"})
    if unknown:
        raise MetadataError(f"unknown key {unknown[0]!r} (known: chain, local, report)", where=path)
    return _parse_local(raw, path), _parse_report(raw, path), _parse_chain(raw, path)


def load_pipeline(root: Path | None = None) -> Pipeline:
    """Read the project at `root` (the bundled one by default): every
    `kernel-metadata/stageN.toml`, `datasets.toml` and `pipeline.toml`."""
    root = (root or bundled_project()).resolve()
    folder = root / METADATA_DIR
    if not folder.is_dir():
        raise MetadataError("folder not found: not a kernelgen project", where=folder)
    stages: dict[int, StageSpec] = {}
    for path in sorted(folder.iterdir()):
        match = _STAGE_FILE.match(path.name)
        if match:
            number = int(match.group(1))
            stages[number] = _parse_stage(path, number)
    if not stages:
        raise MetadataError("no stageN.toml files", where=folder)
    datasets = _parse_datasets(folder / "datasets.toml")
    _check_graph(stages, datasets, folder / "datasets.toml")
    for spec in stages.values():
        if not _MODULE.match(spec.module) or "." not in spec.module:
            raise MetadataError(f"module {spec.module!r} must read 'package.module'", where=spec.source)
        if spec.module.split(".")[0] == "kernelgen":
            raise MetadataError("stage modules cannot live in the kernelgen package", where=spec.source)
    local, report, default_last = _parse_pipeline_file(folder / PIPELINE_FILE)
    if default_last is not None and default_last not in stages:
        raise MetadataError(f"chain.last names unknown stage {default_last}", where=folder / PIPELINE_FILE)
    return Pipeline(
        stages=dict(sorted(stages.items())),
        datasets=datasets,
        source=folder,
        root=root,
        local=local,
        report=report,
        default_last=default_last,
    )
