"""A project: its pipeline (the folder's kernel-metadata and stage modules) and its config,
and what follows from the two alone: each stage's parameters, overrides and machine."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kernelgen.errors import AcceleratorError, ConfigError, ParameterError
from kernelgen.spec.config import BUILTIN_PROFILES, Config, load_config
from kernelgen.spec.machine import Session, accelerator
from kernelgen.spec.matrix import (
    Cell,
    Matrix,
    MatrixOptions,
    cells_of,
    check_matrix,
    parse_matrix_options,
    route_matrix_options,
)
from kernelgen.spec.params import (
    ParamField,
    ParamValue,
    assign_overrides,
    check_values,
    coerce_value,
    parse_overrides,
    parse_text,
    read_param_fields,
    resolve_params,
)
from kernelgen.spec.pipeline import METADATA_DIR, Pipeline, StageSpec, load_pipeline
from kernelgen.spec.resources import bundled_project

Overrides = Mapping[int, Mapping[str, str]]
"""`--set` values routed to their stages: stage -> parameter -> text."""


@dataclass(frozen=True)
class Project:
    pipeline: Pipeline
    config: Config

    @classmethod
    def load(
        cls, config_path: Path | None = None, project_dir: Path | None = None, *, cwd: Path | None = None
    ) -> Project:
        """The project named by `--project`, else the config's `pipeline`, else the current
        folder when it holds `kernel-metadata/`, else the bundled one.

        The config is `--config`, else the current folder's, else the project folder's.
        """
        here = cwd or Path.cwd()
        config = load_config(config_path, start=here)
        if config.path is None and project_dir is not None:
            config = load_config(start=project_dir)
        return cls(pipeline=load_pipeline(find_project_root(project_dir, config, here)), config=config)

    def profile(self, name: str | None) -> str:
        return name or self.config.profile

    def overrides(self, sets: Iterable[str], stages: Sequence[int]) -> dict[int, dict[str, str]]:
        """`--set` values routed to `stages` (an unprefixed name needs exactly one)."""
        for number in stages:
            self.pipeline.stage(number)
        return assign_overrides(parse_overrides(sets), stages, self.pipeline.stages)

    def accelerators(self, choices: Iterable[str], stages: Sequence[int]) -> dict[int, str]:
        """`--accelerator` values for `stages`: `NAME` puts every stage that runs on an
        accelerator on NAME, `N=NAME` only stage N; each name is checked at once."""
        chosen: dict[int, str] = {}
        named: dict[int, str] = {}
        for choice in choices:
            target, sep, name = choice.rpartition("=")
            shape = accelerator(name).name
            if not sep:
                accelerated = [n for n in stages if self.pipeline.stage(n).session.accelerator]
                if not accelerated:
                    which = f"stage {stages[0]} runs" if len(stages) == 1 else f"stages {', '.join(map(str, stages))} run"
                    raise AcceleratorError(f"{which} on a CPU: --accelerator {shape} applies to none")
                chosen.update(dict.fromkeys(accelerated, shape))
                continue
            number = self.pipeline.stage(target.strip().removeprefix("stage")).number
            self.pipeline.stage(number).session.with_accelerator(shape, stage=number)
            named[number] = shape
        return {**chosen, **named}

    def matrix_options(self, items: Iterable[str], stages: Sequence[int]) -> MatrixOptions:
        """`--matrix stageN.FIELD=V1,V2` values routed to `stages` (each must be selected)."""
        return route_matrix_options(parse_matrix_options(items), stages, self.pipeline.stages)

    def params(
        self,
        number: int,
        *,
        profile: str | None = None,
        texts: Mapping[str, str] | None = None,
        extra: Iterable[ParamValue] = (),
        cell: Cell | None = None,
    ) -> list[ParamValue]:
        """Stage `number`'s resolved parameters, checked by building its `Params` with them;
        a matrix cell's values come last, as the `matrix` source."""
        spec = self.pipeline.stage(number)
        source = self.pipeline.module_path(spec.module)
        params = resolve_params(
            read_param_fields(source, spec.number),
            stage=spec.number,
            layers=profile_layers(spec, self.config, self.profile(profile), declared=self.pipeline.profile_names),
            texts=texts,
            extra=extra,
        )
        if cell is not None and cell.values:
            given = dict(cell.values)
            clash = sorted(set(given) & set(texts or {}))
            if clash:
                raise ParameterError(
                    f"--set {clash[0]} and the matrix over {clash[0]} disagree; give its values with --matrix",
                    stage=number,
                )
            params = [ParamValue(p.name, given[p.name], "matrix") if p.name in given else p for p in params]
        check_values(source, {p.name: p.value for p in params}, spec.number)
        return params

    def matrix(self, number: int, *, profile: str | None = None, options: Mapping[str, Sequence[str]] | None = None) -> Matrix:
        """Stage `number`'s matrix, each value of its field's type: `--matrix` values when
        given, else the profile's matrix, else the declared one (none: `()`)."""
        spec = self.pipeline.stage(number)
        fields = {f.name: f for f in read_param_fields(self.pipeline.module_path(spec.module), number)}

        def field(name: str, where: str) -> ParamField:
            if name not in fields:
                raise ParameterError(f"{where}: the stage's Params has no field {name!r}", stage=number, valid=sorted(fields))
            return fields[name]

        if options:
            typed = tuple(
                (name, tuple(parse_text(text, field(name, "--matrix").type, name=name, stage=number) for text in texts))
                for name, texts in options.items()
            )
        else:
            chosen = self.profile(profile)
            declared = spec.profile_matrices.get(chosen, spec.matrix)
            where = f"[profiles.{chosen}.matrix]" if chosen in spec.profile_matrices else "[matrix]"
            typed = tuple(
                (name, tuple(coerce_value(value, field(name, where).type, name=name, stage=number) for value in values))
                for name, values in declared
            )
        return check_matrix(typed, stage=number)

    def cells(self, number: int, *, profile: str | None = None, options: Mapping[str, Sequence[str]] | None = None) -> list[Cell]:
        """Stage `number`'s kernels: one per cell of its matrix, one for a stage without."""
        return cells_of(number, self.matrix(number, profile=profile, options=options))

    def session(self, number: int, accelerator: str | None = None) -> Session:
        """Stage `number`'s session settings, on `accelerator` when one is given."""
        declared = self.pipeline.stage(number).session
        return declared.with_accelerator(accelerator, stage=number) if accelerator else declared


def profile_layers(
    spec: StageSpec, config: Config, profile: str, *, declared: Iterable[str] = ()
) -> list[tuple[str, dict]]:
    """Typed parameter layers for one stage: built-in profile, config profile, config
    overrides. A profile is known when built in, in the config, or `declared` by a stage."""
    known = set(BUILTIN_PROFILES) | set(config.profiles) | set(declared)
    if profile not in known:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(sorted(known))}")
    layers: list[tuple[str, dict]] = []
    if spec.profiles.get(profile):
        layers.append((f"profile {profile}", dict(spec.profiles[profile])))
    from_config = config.profiles.get(profile, {}).get(spec.number)
    if from_config:
        layers.append((f"profile {profile} in {config.label}", from_config))
    if config.stages.get(spec.number):
        layers.append((config.label, config.stages[spec.number]))
    return layers


def find_project_root(explicit: Path | None, config: Config, cwd: Path) -> Path:
    named = [(explicit, "--project"), (config.pipeline, f"{config.label}: pipeline")]
    for folder, where in named:
        if folder is not None:
            if not (folder / METADATA_DIR).is_dir():
                raise ConfigError(f"{where} {folder}: no {METADATA_DIR}/ folder there")
            return folder
    if (cwd / METADATA_DIR).is_dir():
        return cwd
    return bundled_project()
