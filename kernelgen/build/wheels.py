"""Wheel houses for internet-off stages that declare `pip` requirements.

Such a stage cannot reach an index, so a helper kernel (internet on, no GPU, on the
stage's image so the platform tags match) downloads what the image lacks as wheels,
and its output is attached to the stage through `kernel_sources`. The helper's slug
carries a hash of the requirements and image: the same requirements give the same
kernel, and the chain builds it again only when its rendered files change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from kernelgen.build import notebook as nb
from kernelgen.build.metadata import KERNEL_METADATA_FILE, kernel_metadata, metadata_bytes
from kernelgen.build.templating import render_template
from kernelgen.build.validate import kernel_slug
from kernelgen.spec.machine import Session
from kernelgen.spec.pipeline import Pipeline, PipRequirement, StageSpec

CODE_FILE = "wheels.ipynb"


@dataclass(frozen=True)
class WheelHouse:
    """The helper kernel that makes one set of requirements' wheels for one image."""

    title: str
    requirements: tuple[PipRequirement, ...]
    session: Session

    @property
    def slug(self) -> str:
        return kernel_slug(self.title)

    def kernel_id(self, username: str) -> str:
        return f"{username}/{self.slug}"


def wheel_house(pipeline: Pipeline, spec: StageSpec) -> WheelHouse | None:
    """The wheel house stage `spec` installs from: internet-off stages with `pip` only."""
    if spec.enable_internet or not spec.pip:
        return None
    requirements = tuple(sorted(set(spec.pip), key=lambda r: (r.requirement, r.module)))
    session = Session(pinning=spec.session.pinning, docker_image=spec.session.docker_image)
    hasher = hashlib.sha256()
    for req in requirements:
        hasher.update(f"{req.module}\0{req.requirement}\0".encode())
    hasher.update(f"{session.pinning.value}\0{session.docker_image or ''}".encode())
    prefix = kernel_slug(pipeline.stage(min(pipeline.stages)).title).split("-")[0]
    return WheelHouse(title=f"{prefix} wheels {hasher.hexdigest()[:12]}", requirements=requirements, session=session)


def wheel_houses(pipeline: Pipeline, stages: Iterable[int]) -> list[WheelHouse]:
    """The distinct wheel houses the given stages install from, in stage order."""
    found: dict[str, WheelHouse] = {}
    for number in stages:
        house = wheel_house(pipeline, pipeline.stage(number))
        if house is not None:
            found.setdefault(house.slug, house)
    return list(found.values())


def render_wheels(house: WheelHouse, username: str) -> dict[str, bytes]:
    """The helper kernel's files, validated as the Kaggle client would."""
    cell = nb.code_cell(render_template("wheels.py.j2", requirements=house.requirements))
    code = nb.to_bytes(nb.assemble([cell], prefix=house.slug))
    meta = kernel_metadata(
        kernel_id=house.kernel_id(username),
        title=house.title,
        code_file=CODE_FILE,
        files={CODE_FILE: code},
        session=house.session,
        enable_internet=True,
        where=f"wheels kernel {house.slug} {KERNEL_METADATA_FILE}",
    )
    return {KERNEL_METADATA_FILE: metadata_bytes(meta), CODE_FILE: code}
