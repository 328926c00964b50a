"""Datasets built from stage outputs, as kernel-metadata/datasets.toml declares them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from kernelgen.errors import KernelgenError
from kernelgen.spec.pipeline import DatasetSpec
from kernelgen.build.kernel import replace_dir
from kernelgen.build.templating import render_template
from kernelgen.build.validate import validate_dataset_metadata

LICENSE = "CC0-1.0"


def missing_files(spec: DatasetSpec, outputs: Path) -> list[Path]:
    return [p for p in (outputs / f"stage{f.stage}" / f.name for f in spec.files) if not p.is_file()]


def files_digest(spec: DatasetSpec, outputs: Path) -> str:
    hasher = hashlib.sha256()
    for item in spec.files:
        hasher.update(item.name.encode() + b"\0")
        with (outputs / f"stage{item.stage}" / item.name).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest()


def build_dataset(spec: DatasetSpec, outputs: Path, dest: Path, *, username: str) -> Path:
    """Write `dest/<slug>/` with dataset-metadata.json and the declared files."""
    absent = missing_files(spec, outputs)
    if absent:
        raise KernelgenError(
            f"dataset {spec.slug}: missing stage outputs: {', '.join(str(p) for p in absent)}"
        )
    text = render_template(
        "dataset-metadata.json.j2", title=spec.title, id=f"{username}/{spec.slug}", license=LICENSE
    )
    validate_dataset_metadata(json.loads(text), where=f"dataset {spec.slug}")
    dest.mkdir(parents=True, exist_ok=True)
    scratch = dest / f".{spec.slug}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    (scratch / "dataset-metadata.json").write_text(text, encoding="utf-8")
    for item in spec.files:
        shutil.copy2(outputs / f"stage{item.stage}" / item.name, scratch / item.name)
    target = dest / spec.slug
    replace_dir(scratch, target)
    return target
