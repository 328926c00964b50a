"""The JSON files the Kaggle client reads: kernel-metadata.json and dataset-metadata.json.

They are built as dicts, checked as the client would check them, and written with one
JSON layout, so no value is ever pasted into JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kernelgen.build.validate import (
    validate_dataset_metadata,
    validate_kernel_metadata,
    validate_model_metadata,
)
from kernelgen.spec.machine import AcceleratorKind, Session

KERNEL_METADATA_FILE = "kernel-metadata.json"
DATASET_METADATA_FILE = "dataset-metadata.json"
MODEL_METADATA_FILE = "model-metadata.json"
MODEL_INSTANCE_METADATA_FILE = "model-instance-metadata.json"
LICENSE = "CC0-1.0"
MODEL_LICENSE = "Apache 2.0"


def metadata_bytes(meta: Mapping[str, Any]) -> bytes:
    """A metadata dict as the file holds it: keys in the given order, two-space indent."""
    return (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def kernel_metadata(
    *,
    kernel_id: str,
    title: str,
    code_file: str,
    files: Mapping[str, bytes],
    session: Session,
    enable_internet: bool,
    language: str = "python",
    kernel_type: str = "notebook",
    is_private: bool = True,
    dataset_sources: Sequence[str] = (),
    competition_sources: Sequence[str] = (),
    kernel_sources: Sequence[str] = (),
    model_sources: Sequence[str] = (),
    where: str,
) -> dict[str, Any]:
    """A kernel's metadata, validated against its rendered `files` (the code file must be
    among them); `where` names it in errors."""
    meta: dict[str, Any] = {
        "id": kernel_id,
        "title": title,
        "code_file": code_file,
        "language": language,
        "kernel_type": kernel_type,
        "is_private": is_private,
        "enable_gpu": session.kind is AcceleratorKind.GPU,
        "enable_tpu": session.kind is AcceleratorKind.TPU,
        "enable_internet": enable_internet,
    }
    if session.accelerator:
        meta["machine_shape"] = session.accelerator
    meta["session_timeout_seconds"] = session.timeout_seconds
    meta["docker_image_pinning_type"] = session.pinning.value
    if session.docker_image:
        meta["docker_image"] = session.docker_image
    meta["dataset_sources"] = list(dataset_sources)
    meta["competition_sources"] = list(competition_sources)
    meta["kernel_sources"] = list(kernel_sources)
    meta["model_sources"] = list(model_sources)
    validate_kernel_metadata(meta, files, where=where)
    return meta


def dataset_metadata(*, dataset_id: str, title: str, where: str) -> dict[str, Any]:
    """A dataset's metadata (one license, as dataset create requires), validated."""
    meta = {"title": title, "id": dataset_id, "licenses": [{"name": LICENSE}]}
    validate_dataset_metadata(meta, where=where)
    return meta


def model_metadata(*, owner: str, slug: str, title: str, where: str) -> dict[str, Any]:
    """A private Kaggle Model, as `kaggle models create` reads it."""
    meta = {
        "ownerSlug": owner,
        "slug": slug,
        "title": title,
        "subtitle": "",
        "isPrivate": True,
        "description": f"{title}: published by kernelgen from the stage that makes it.",
        "publishTime": "",
        "provenanceSources": "",
    }
    validate_model_metadata(meta, where=where)
    return meta


def model_instance_metadata(*, owner: str, model: str, framework: str, variation: str) -> dict[str, Any]:
    """One model instance (a framework and a variation), as `kaggle models instances create`
    reads it; its versions hold the files."""
    return {
        "ownerSlug": owner,
        "modelSlug": model,
        "instanceSlug": variation,
        "framework": framework,
        "overview": "",
        "usage": "",
        "licenseName": MODEL_LICENSE,
        "fineTunable": False,
        "trainingData": [],
        "modelInstanceType": "Unspecified",
    }
