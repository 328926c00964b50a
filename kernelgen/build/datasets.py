"""Datasets built from stage outputs, as kernel-metadata/datasets.toml declares them.

Where a stage's outputs lie is the work folder's business: functions here take
`outputs_of`, the folders of a stage's outputs by stage number (one per cell of a
matrix stage, whose files the dataset holds in a folder per cell).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from kernelgen.build.metadata import (
    DATASET_METADATA_FILE,
    MODEL_INSTANCE_METADATA_FILE,
    MODEL_METADATA_FILE,
    dataset_metadata,
    metadata_bytes,
    model_instance_metadata,
    model_metadata,
)
from kernelgen.errors import MissingOutputError
from kernelgen.files import staged_dir
from kernelgen.spec.pipeline import DatasetSpec, Via

OutputsOf = Callable[[int], Sequence[tuple[str, Path]]]
"""The folders holding a stage's outputs, by stage number, each with the folder its files
take in a dataset: `[("", outputs/stage2)]`, or one per cell of a matrix stage,
`[("fold-0", outputs/stage4/fold-0), ...]`."""


def dataset_files(spec: DatasetSpec, outputs_of: OutputsOf) -> list[tuple[str, Path]]:
    """Each file of the dataset: its name there (`model.pth`, `fold-0/model.pth`) and
    where it lies now."""
    found = []
    for item in spec.files:
        for folder, outputs in outputs_of(item.stage):
            found.append((f"{folder}/{item.name}" if folder else item.name, outputs / item.name))
    return found


def missing_files(spec: DatasetSpec, outputs_of: OutputsOf) -> list[Path]:
    return [path for _, path in dataset_files(spec, outputs_of) if not path.is_file()]


def files_digest(spec: DatasetSpec, outputs_of: OutputsOf) -> str:
    """A content hash of the dataset's files, names included: equal digests, equal dataset."""
    hasher = hashlib.sha256()
    for name, path in dataset_files(spec, outputs_of):
        hasher.update(name.encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest()


def build_dataset(spec: DatasetSpec, outputs_of: OutputsOf, dest: Path, *, username: str) -> Path:
    """Write `dest/<slug>/` with the declared files and their metadata, whole or not at all:
    dataset-metadata.json, or for a model (`via = "model"`) model-metadata.json and
    model-instance-metadata.json."""
    absent = missing_files(spec, outputs_of)
    if absent:
        raise MissingOutputError(f"dataset {spec.slug}: missing stage outputs: {', '.join(map(str, absent))}")
    where = f"dataset {spec.slug}"
    if spec.via is Via.MODEL:
        metadata = {
            MODEL_METADATA_FILE: model_metadata(owner=username, slug=spec.slug, title=spec.title, where=where),
            MODEL_INSTANCE_METADATA_FILE: model_instance_metadata(
                owner=username, model=spec.slug, framework=spec.framework, variation=spec.variation
            ),
        }
    else:
        metadata = {DATASET_METADATA_FILE: dataset_metadata(dataset_id=f"{username}/{spec.slug}", title=spec.title, where=where)}
    target = dest / spec.slug
    with staged_dir(target) as scratch:
        for name, meta in metadata.items():
            (scratch / name).write_bytes(metadata_bytes(meta))
        for name, path in dataset_files(spec, outputs_of):
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, scratch / name)
    return target
