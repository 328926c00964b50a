"""Datasets built from stage outputs, as kernel-metadata/datasets.toml declares them.

Where a stage's outputs lie is the work folder's business: functions here take
`outputs_of`, the folder of a stage's outputs by stage number.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
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
from kernelgen.spec.pipeline import DatasetFile, DatasetSpec, Via

OutputsOf = Callable[[int], Path]
"""The folder holding a stage's outputs, by stage number."""


def file_path(item: DatasetFile, outputs_of: OutputsOf) -> Path:
    return outputs_of(item.stage) / item.name


def missing_files(spec: DatasetSpec, outputs_of: OutputsOf) -> list[Path]:
    return [path for path in (file_path(f, outputs_of) for f in spec.files) if not path.is_file()]


def files_digest(spec: DatasetSpec, outputs_of: OutputsOf) -> str:
    """A content hash of the dataset's files, names included: equal digests, equal dataset."""
    hasher = hashlib.sha256()
    for item in spec.files:
        hasher.update(item.name.encode() + b"\0")
        with file_path(item, outputs_of).open("rb") as fh:
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
        for item in spec.files:
            shutil.copy2(file_path(item, outputs_of), scratch / item.name)
    return target
