"""Checks the official client makes on push and dataset create, made before anything is written.

The client only warns when a title does not slugify to the kernel slug, and Kaggle
then renames the kernel; here that is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from slugify import slugify

from kernelgen.errors import AcceleratorError, MetadataError
from kernelgen.spec.machine import SESSION_CAP_HOURS, DockerPinning, accelerator

LANGUAGES = ("python", "r", "rmarkdown")
KERNEL_TYPES = ("script", "notebook")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def kernel_slug(title: str) -> str:
    return slugify(title)


def check_username(username: str, *, where: str) -> None:
    if not _NAME.match(username):
        raise MetadataError(f"Kaggle username {username!r} is not valid (letters, digits, '-' and '_')", where=where)


_REF_FORMS = {
    2: "owner/slug",
    3: "owner/slug/version",
    4: "owner/model/framework/variation",
    5: "owner/model/framework/variation/version",
}


def _check_ref(ref: object, parts_allowed: tuple[int, ...], what: str, where: str) -> None:
    parts = ref.split("/") if isinstance(ref, str) else []
    if len(parts) not in parts_allowed or not all(parts):
        forms = " or ".join(_REF_FORMS[n] for n in parts_allowed)
        raise MetadataError(f"{what} {ref!r} must have the form {forms}", where=where)


def validate_kernel_metadata(meta: Mapping[str, Any], files: Mapping[str, bytes], *, where: str) -> None:
    """Everything `kaggle kernels push` would refuse, plus a title that renames the kernel."""
    title = meta.get("title")
    if not isinstance(title, str) or len(title) < 5:
        raise MetadataError("title must be at least five characters", where=where)
    if len(title) > 50:
        raise MetadataError("title must be at most 50 characters", where=where)
    ref = meta.get("id")
    if not isinstance(ref, str):
        raise MetadataError("'id' must be 'owner/slug'", where=where)
    _check_ref(ref, (2,), "kernel id", where)
    slug = ref.split("/")[1]
    if slug != kernel_slug(title):
        raise MetadataError(
            f"title {title!r} slugifies to {kernel_slug(title)!r}, not the kernel slug {slug!r}",
            where=where,
        )
    if meta.get("language") not in LANGUAGES:
        raise MetadataError(f"language must be one of {', '.join(LANGUAGES)}", where=where)
    if meta.get("kernel_type") not in KERNEL_TYPES:
        raise MetadataError(f"kernel_type must be one of {', '.join(KERNEL_TYPES)}", where=where)
    code_file = meta.get("code_file")
    if not isinstance(code_file, str) or code_file not in files:
        raise MetadataError(f"code_file {code_file!r} is not among the rendered files", where=where)
    for source in meta.get("dataset_sources", []):
        _check_ref(source, (2, 3), "dataset source", where)
    for source in meta.get("kernel_sources", []):
        _check_ref(source, (2, 3), "kernel source", where)
    for source in meta.get("model_sources", []):
        _check_ref(source, (4, 5), "model source", where)
    for source in meta.get("competition_sources", []):
        if not isinstance(source, str) or not source or "/" in source:
            raise MetadataError(f"competition source {source!r} must be a competition slug", where=where)
    for key in ("is_private", "enable_gpu", "enable_tpu", "enable_internet"):
        if not isinstance(meta.get(key), bool):
            raise MetadataError(f"{key} must be true or false", where=where)
    _check_session(meta, where)


def _check_session(meta: Mapping[str, Any], where: str) -> None:
    """Machine shape, time limit and pinning: what the client passes on unchecked."""
    shape = meta.get("machine_shape")
    if shape is not None:
        try:
            known = accelerator(shape) if isinstance(shape, str) else None
        except AcceleratorError as exc:
            raise MetadataError(str(exc), where=where) from None
        if known is None or known.name != shape:
            raise MetadataError(f"machine_shape {shape!r} must be spelled as Kaggle names it", where=where)
    timeout = meta.get("session_timeout_seconds")
    if timeout is not None and (
        type(timeout) is not int or not 0 < timeout <= SESSION_CAP_HOURS * 3600
    ):
        raise MetadataError(
            f"session_timeout_seconds must be a whole number of seconds up to {SESSION_CAP_HOURS * 3600:.0f}",
            where=where,
        )
    pinning = meta.get("docker_image_pinning_type")
    if pinning is not None and pinning not in {p.value for p in DockerPinning}:
        raise MetadataError(
            f"docker_image_pinning_type must be one of {', '.join(p.value for p in DockerPinning)}", where=where
        )


def validate_dataset_metadata(meta: Mapping[str, Any], *, where: str) -> None:
    """What dataset create refuses: slug and title of 6-50 characters, one license."""
    ref = meta.get("id")
    if not isinstance(ref, str):
        raise MetadataError("'id' must be 'owner/slug'", where=where)
    _check_ref(ref, (2,), "dataset id", where)
    slug = ref.split("/")[1]
    title = meta.get("title")
    if not 6 <= len(slug) <= 50:
        raise MetadataError(f"dataset slug {slug!r} must have 6 to 50 characters", where=where)
    if not isinstance(title, str) or not 6 <= len(title) <= 50:
        raise MetadataError(f"dataset title {title!r} must have 6 to 50 characters", where=where)
    licenses = meta.get("licenses")
    if (
        not isinstance(licenses, list)
        or len(licenses) != 1
        or not isinstance(licenses[0], dict)
        or not licenses[0].get("name")
    ):
        raise MetadataError("a dataset needs exactly one license", where=where)


_MODEL_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def validate_model_metadata(meta: Mapping[str, Any], *, where: str) -> None:
    """What `kaggle models create` refuses: a slug of lowercase letters, digits and single
    dashes; a title of 5 to 50 characters."""
    slug = meta.get("slug")
    if not isinstance(slug, str) or not _MODEL_SLUG.match(slug):
        raise MetadataError(f"model slug {slug!r} must be lowercase letters and digits joined by single dashes", where=where)
    title = meta.get("title")
    if not isinstance(title, str) or not 5 <= len(title) <= 50:
        raise MetadataError(f"model title {title!r} must have 5 to 50 characters", where=where)
