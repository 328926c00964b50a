# %% [markdown]
# ## Input layout
# Kaggle mounts inputs under `/kaggle/input` in several shapes; resolve a slug
# by trying each known one. Locally the root is any folder of the same shape,
# named by the `KERNELGEN_ROOT` environment variable (and `KERNELGEN_WORKING`
# may put the outputs elsewhere).

# %%
import os
from dataclasses import dataclass
from pathlib import Path

from kernelgen.runtime.errors import InputError

ROOT_ENV = "KERNELGEN_ROOT"
WORKING_ENV = "KERNELGEN_WORKING"
KAGGLE_ROOT = "/kaggle"


@dataclass(frozen=True)
class Layout:
    """Where a stage reads its inputs and writes its outputs."""

    root: Path
    working_dir: Path | None = None

    @classmethod
    def kaggle(cls) -> "Layout":
        """The layout of a running kernel: `/kaggle`, or `$KERNELGEN_ROOT` when set."""
        working = os.environ.get(WORKING_ENV)
        return cls(
            Path(os.environ.get(ROOT_ENV) or KAGGLE_ROOT),
            working_dir=Path(working) if working else None,
        )

    @property
    def working(self) -> Path:
        path = self.working_dir if self.working_dir is not None else self.root / "working"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def candidates(self, slug: str) -> list[Path]:
        """Every place a source named `slug` may be mounted, most specific first."""
        base = self.root / "input"
        found = [base / slug, base / "competitions" / slug]
        for kind in ("datasets", "notebooks"):
            kind_dir = base / kind
            if kind_dir.is_dir():
                found.extend(sorted(kind_dir.glob(f"*/{slug}")))
            else:
                found.append(kind_dir / "<owner>" / slug)
        return found

    def input(self, slug: str) -> Path:
        """The folder holding input `slug`, with one error naming every place tried."""
        tried = self.candidates(slug)
        for path in tried:
            if path.is_dir():
                return path
        raise InputError(
            f"input {slug!r} not found; looked in: " + ", ".join(str(p) for p in tried)
        )

    def input_file(self, slug: str, name: str) -> Path:
        """A file inside input `slug`, with an error naming the full path when absent."""
        path = self.input(slug) / name
        if not path.is_file():
            raise InputError(f"{path}: file not found in input {slug!r}")
        return path
