"""Datasets built from stage outputs, as kernel-metadata/datasets.toml declares them.

Where a stage's outputs lie is the work folder's business: functions here take
`outputs_of`, the folder of a stage's outputs by stage number.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from kernelgen.build.metadata import DATASET_METADATA_FILE, dataset_metadata, metadata_bytes
from kernelgen.errors import MissingOutputError
from kernelgen.files import staged_dir
from kernelgen.spec.pipeline import DatasetFile, DatasetSpec

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
    """Write `dest/<slug>/` with dataset-metadata.json and the declared files, whole or not at all."""
    absent = missing_files(spec, outputs_of)
    if absent:
        raise MissingOutputError(f"dataset {spec.slug}: missing stage outputs: {', '.join(map(str, absent))}")
    meta = dataset_metadata(dataset_id=f"{username}/{spec.slug}", title=spec.title, where=f"dataset {spec.slug}")
    target = dest / spec.slug
    with staged_dir(target) as scratch:
        (scratch / DATASET_METADATA_FILE).write_bytes(metadata_bytes(meta))
        for item in spec.files:
            shutil.copy2(file_path(item, outputs_of), scratch / item.name)
    return target
