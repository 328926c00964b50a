"""The core API the CLI is a thin layer over: resolve parameters, render, run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kernelgen.backends.execute import DEFAULT_JUPYTER_KERNEL
from kernelgen.build.kernel import RenderedKernel, render_stage, stage_params, write_kernels
from kernelgen.errors import AcceleratorError, ConfigError
from kernelgen.run.local import run_module, run_notebook
from kernelgen.spec.config import Config, load_config, resolve_username
from kernelgen.spec.machine import Session, accelerator
from kernelgen.spec.params import ParamValue, assign_overrides, parse_overrides
from kernelgen.spec.pipeline import METADATA_DIR, Pipeline, load_pipeline
from kernelgen.spec.resources import bundled_project


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

    def params(
        self,
        number: int,
        *,
        profile: str | None = None,
        texts: Mapping[str, str] | None = None,
        extra: Iterable[ParamValue] = (),
    ) -> list[ParamValue]:
        return stage_params(
            self.pipeline,
            self.pipeline.stage(number),
            config=self.config,
            profile=self.profile(profile),
            texts=texts,
            extra=extra,
        )

    def render(
        self,
        stages: Sequence[int],
        *,
        username: str | None = None,
        profile: str | None = None,
        sets: Iterable[str] = (),
        extra: Mapping[int, Iterable[ParamValue]] | None = None,
        accelerators: Mapping[int, str] | None = None,
        kernel_versions: Mapping[int, int] | None = None,
        wheel_versions: Mapping[str, int] | None = None,
    ) -> list[RenderedKernel]:
        """Render stages in memory; every problem is raised before anything is written.

        `accelerators` puts stages on other machine shapes than they declare;
        `kernel_versions` names the output version each `via = "kernel"` input reads,
        `wheel_versions` that of each wheel house (by slug).
        """
        user = resolve_username(username, self.config)
        routed = self.overrides(sets, stages)
        chosen = self.profile(profile)
        return [
            render_stage(
                self.pipeline,
                number,
                username=user,
                params=self.params(
                    number, profile=chosen, texts=routed.get(number), extra=(extra or {}).get(number, ())
                ),
                profile=chosen,
                session=self.session(number, (accelerators or {}).get(number)),
                kernel_versions=kernel_versions,
                wheel_versions=wheel_versions,
            )
            for number in stages
        ]

    def session(self, number: int, accelerator: str | None = None) -> Session:
        """Stage `number`'s session settings, on `accelerator` when one is given."""
        declared = self.pipeline.stage(number).session
        return declared.with_accelerator(accelerator, stage=number) if accelerator else declared

    def write(self, kernels: Sequence[RenderedKernel], out: Path) -> list[Path]:
        return write_kernels(kernels, out)

    def run(
        self,
        number: int,
        root: Path,
        *,
        profile: str | None = None,
        sets: Iterable[str] = (),
        notebook: bool = False,
        timeout: int | None = None,
        jupyter_kernel: str = DEFAULT_JUPYTER_KERNEL,
    ) -> Path:
        """Run one stage against the Kaggle-shaped folder `root`; returns its outputs folder.

        With `notebook`, the rendered notebook runs in the Jupyter kernel `jupyter_kernel`.
        """
        texts = self.overrides(sets, [number]).get(number)
        if notebook:
            kernel = self.render([number], username="local", profile=profile, sets=sets)[0]
            return run_notebook(
                kernel,
                root,
                packages=self.pipeline.packages,
                timeout=timeout,
                jupyter_kernel=jupyter_kernel,
            )
        params = self.params(number, profile=profile, texts=texts)
        return run_module(self.pipeline, self.pipeline.stage(number), params, root)


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
