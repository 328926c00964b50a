# %% [markdown]
# ## Input layout
# Kaggle mounts inputs under `/kaggle/input` in several shapes; resolve a slug
# by trying each known one. Locally the root is any folder of the same shape,
# named by the `KERNELGEN_ROOT` environment variable (and `KERNELGEN_WORKING`
# may put the outputs elsewhere). An input read from another kernel's output is
# mounted under that kernel's slug; `aliases` lets a stage ask for it by the
# dataset slug all the same. An input published as a Kaggle Model version is
# mounted under the model's path; `models` names that version by the dataset slug.
# An input made by a matrix stage holds one folder per cell (or, read from kernel
# outputs, one kernel per cell); `matrix` gives each cell's values by the dataset slug,
# and `cells` returns them with their folders.

# %%
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kernelgen.runtime.cells import cell_name
from kernelgen.runtime.errors import InputError

ROOT_ENV = "KERNELGEN_ROOT"
WORKING_ENV = "KERNELGEN_WORKING"
KAGGLE_ROOT = "/kaggle"


def _cell_folder(slug: str, base: Path, name: str) -> Path:
    """A cell's folder in a dataset: `fold-0/`, or the `fold-0.zip` the official client
    uploads a folder as, unpacked once into a temporary folder."""
    folder = base / name
    if folder.is_dir():
        return folder
    archive = base / f"{name}.zip"
    if not archive.is_file():
        raise InputError(f"input {slug!r} has no folder for cell {name}: neither {folder} nor {archive}")
    unpacked = Path(tempfile.gettempdir()) / "kernelgen-cells" / slug / name
    if not unpacked.is_dir():
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=unpacked.parent))
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(scratch)
        scratch.rename(unpacked)
    return unpacked


@dataclass(frozen=True)
class Layout:
    """Where a stage reads its inputs and writes its outputs."""

    root: Path
    working_dir: Path | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)
    matrix: Mapping[str, Sequence[Mapping[str, object]]] = field(default_factory=dict)

    @classmethod
    def kaggle(
        cls,
        aliases: Mapping[str, str] | None = None,
        models: Mapping[str, str] | None = None,
        matrix: Mapping[str, Sequence[Mapping[str, object]]] | None = None,
    ) -> "Layout":
        """The layout of a running kernel: `/kaggle`, or `$KERNELGEN_ROOT` when set.

        `aliases` maps a dataset slug to the slug of the kernel whose output the
        kernel reads in its place (for a matrix stage, the slug its cells' kernels
        extend); `models` maps a dataset slug to the model version
        (`owner/model/framework/variation/version`) it reads in its place; `matrix`
        maps a dataset slug made by a matrix stage to its cells' values, in order.
        """
        working = os.environ.get(WORKING_ENV)
        return cls(
            Path(os.environ.get(ROOT_ENV) or KAGGLE_ROOT),
            working_dir=Path(working) if working else None,
            aliases=dict(aliases or {}),
            models=dict(models or {}),
            matrix={slug: [dict(cell) for cell in cells] for slug, cells in (matrix or {}).items()},
        )

    @property
    def working(self) -> Path:
        path = self.working_dir if self.working_dir is not None else self.root / "working"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def names(self, slug: str) -> list[str]:
        """`slug` and the other name of the same input, if it has one."""
        others = [kernel for name, kernel in self.aliases.items() if name == slug]
        others += [name for name, kernel in self.aliases.items() if kernel == slug]
        return [slug, *(name for name in others if name != slug)]

    def candidates(self, slug: str) -> list[Path]:
        """Every place a source named `slug` may be mounted, most specific first."""
        base = self.root / "input"
        found = []
        if slug in self.models:
            owner, model, framework, variation, version = self.models[slug].split("/")
            found += [
                base / model / framework / variation / version,
                base / "models" / owner / model / framework / variation / version,
            ]
        for name in self.names(slug):
            found += [base / name, base / "competitions" / name]
            for kind in ("datasets", "notebooks"):
                kind_dir = base / kind
                if kind_dir.is_dir():
                    found.extend(sorted(kind_dir.glob(f"*/{name}")))
                else:
                    found.append(kind_dir / "<owner>" / name)
        return found

    def input(self, slug: str) -> Path:
        """The folder holding input `slug`, with one error naming every place tried."""
        if slug in self.matrix:
            names = ", ".join(cell_name(cell) for cell in self.matrix[slug])
            raise InputError(
                f"input {slug!r} comes from a matrix stage, one folder per cell ({names}): "
                f"read it with layout.cells({slug!r})"
            )
        return self._find(slug)

    def cells(self, slug: str) -> list[tuple[dict[str, object], Path]]:
        """Each cell's values (`{"fold": 0}`) and its folder, in cell order, for an input
        made by a matrix stage; one cell without values for any other input."""
        if slug not in self.matrix:
            return [({}, self._find(slug))]
        kernel = self.aliases.get(slug)
        if kernel is not None:  # each cell is its own kernel's output
            return [(dict(cell), self._find(f"{kernel}-{cell_name(cell)}")) for cell in self.matrix[slug]]
        base = self._find(slug)
        return [(dict(cell), _cell_folder(slug, base, cell_name(cell))) for cell in self.matrix[slug]]

    def _find(self, slug: str) -> Path:
        tried = self.candidates(slug)
        for path in tried:
            if path.is_dir():
                return path
        raise InputError(
            f"input {slug!r} not found; looked in: " + ", ".join(str(p) for p in tried)
        )

    def input_file(self, slug: str, name: str) -> Path:
        """A file inside input `slug`, with an error naming the full path when absent."""
        return _existing_file(self.input(slug) / name, slug)

    def cell_files(self, slug: str, name: str) -> list[Path]:
        """File `name` of every cell of input `slug`, in cell order (one for an input not
        made by a matrix stage), with an error naming the first one absent."""
        return [_existing_file(folder / name, slug) for _, folder in self.cells(slug)]


def _existing_file(path: Path, slug: str) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: file not found in input {slug!r}")
    return path
