"""`kernelgen new DIR`: a small working project of the user's own, made from the templates
in `kernelgen/scaffold/template/`.

The project is a two-stage tabular pipeline that needs only the standard library: stage
1 fits a logistic regression and chooses a threshold, stage 2 writes the submission,
a generator makes synthetic competition data for local runs, and the project's tests
run with `pytest`. Template files end in `.tmpl` (so no linter or test runner takes
them for code) and are rendered by plain replacement of three placeholders:
`{{package}}` (the Python package of the stage modules), `{{slug}}` (its Kaggle-style
slug, also the competition slug) and `{{title}}` (the slug as words, for titles).
The top folder `package/` becomes the package and `gitignore` becomes `.gitignore`.

Everything is written into a temporary sibling of the destination and moved into
place at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import importlib.util
import keyword
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from kernelgen.errors import ScaffoldError

TEMPLATE_DIR = Path(__file__).resolve().parent / "template"
TEMPLATE_SUFFIX = ".tmpl"
PACKAGE_FOLDER = "package"
RENAMED = {"gitignore": ".gitignore"}
MAX_NAME_LENGTH = 40  # keeps kernel titles and dataset slugs within Kaggle's 50 characters
RESERVED = {
    "kernelgen": "kernelgen's own package",
    "tests": "the project's tests folder",
}
_PLACEHOLDER = re.compile(r"\{\{[a-z_]+\}\}")


def package_name_for(folder: str) -> str:
    """The package name a folder name suggests: lower case, runs of other characters as `_`."""
    return re.sub(r"[^a-z0-9_]+", "_", folder.lower()).strip("_")


def slug_for(name: str) -> str:
    """The Kaggle-style slug of a package name: `my_comp` -> `my-comp`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def check_package_name(name: str) -> None:
    """Refuse a name that cannot be the project's package; the message says why."""
    if not (name.isascii() and name.isidentifier()) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"package name {name!r} is not a valid Python identifier "
            "(ASCII letters, digits and underscores, not starting with a digit, not a keyword)"
        )
    if name in RESERVED:
        raise ScaffoldError(f"package name {name!r} is taken by {RESERVED[name]}")
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        raise ScaffoldError(
            f"package name {name!r} would shadow the standard library module {name!r}"
        )
    if not slug_for(name):
        raise ScaffoldError(f"package name {name!r} needs at least one letter or digit")
    if len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"package name {name!r} is longer than {MAX_NAME_LENGTH} characters "
            "(kernel titles and dataset slugs built from it must fit Kaggle's 50)"
        )
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin is not None:
        raise ScaffoldError(
            f"package name {name!r} would shadow the installed module {name!r} ({spec.origin})"
        )


def _placeholders(name: str) -> dict[str, str]:
    slug = slug_for(name)
    return {
        "{{package}}": name,
        "{{slug}}": slug,
        "{{title}}": " ".join(part.capitalize() for part in slug.split("-")),
    }


def _target(relative: Path, name: str) -> Path:
    parts = list(relative.with_name(relative.name.removesuffix(TEMPLATE_SUFFIX)).parts)
    if parts[0] == PACKAGE_FOLDER:
        parts[0] = name
    parts[-1] = RENAMED.get(parts[-1], parts[-1])
    return Path(*parts)


def render_files(name: str) -> dict[Path, str]:
    """Every file of a new project with package `name`: relative path -> text."""
    values = _placeholders(name)
    files: dict[Path, str] = {}
    for path in sorted(TEMPLATE_DIR.rglob(f"*{TEMPLATE_SUFFIX}")):
        text = path.read_text(encoding="utf-8")
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        left = _PLACEHOLDER.search(text)
        if left:
            raise ScaffoldError(f"template {path}: unknown placeholder {left.group(0)}")
        files[_target(path.relative_to(TEMPLATE_DIR), name)] = text
    if not files:
        raise ScaffoldError(f"no project templates in {TEMPLATE_DIR}")
    return files


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() and not dest.exists():
        raise ScaffoldError(f"{dest} is a broken link; choose a new folder or an empty one")
    if dest.exists():
        if not dest.is_dir():
            raise ScaffoldError(
                f"{dest} exists and is not a folder; choose a new folder or an empty one"
            )
        if any(dest.iterdir()):
            raise ScaffoldError(f"{dest} is not empty; choose a new folder or an empty one")


def _make_parents(folder: Path) -> Path | None:
    """Create `folder` and its missing parents; returns the topmost one created, if any."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def _move_contents(source: Path, target: Path) -> None:
    """Move every entry of `source` into the empty folder `target`; undo on failure."""
    moved: list[Path] = []
    try:
        for entry in sorted(source.iterdir()):
            entry.rename(target / entry.name)
            moved.append(target / entry.name)
    except OSError:
        for item in moved:
            item.rename(source / item.name)
        raise


def create_project(dest: Path, *, name: str | None = None) -> Path:
    """Scaffold a new project in `dest` (absent or an empty folder); returns its absolute path.

    The package name is `name`, else derived from the folder name (`my-comp` ->
    `my_comp`). Refuses, with a :class:`KernelgenError`, a non-empty `dest` and a
    name that is no identifier, is `kernelgen`, or shadows a standard library or
    installed module.
    """
    dest = Path(os.path.abspath(dest))
    _check_dest(dest)
    folder_name = dest.name
    if name is None:
        name = package_name_for(folder_name)
        try:
            check_package_name(name)
        except ScaffoldError as exc:
            raise ScaffoldError(
                f"cannot use the folder name {folder_name!r} as the package name ({exc}); "
                "choose one with --name"
            ) from None
    else:
        check_package_name(name)
    files = render_files(name)

    parent = dest.parent
    created_parent: Path | None = None
    scratch = parent / f".{dest.name}.kernelgen-new-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        created_parent = _make_parents(parent)
        scratch.mkdir()
        try:
            for relative, text in files.items():
                path = scratch / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8", newline="\n")
            _check_dest(dest)
            if dest.exists():
                _move_contents(scratch, dest)
                scratch.rmdir()
            else:
                scratch.rename(dest)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
    except BaseException as exc:
        if created_parent is not None and not dest.exists():
            shutil.rmtree(created_parent, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ScaffoldError(f"cannot create {dest}: {exc}") from None
        raise
    return dest.resolve()
