"""A backend on this machine: pushed kernels run here, datasets are versioned folders.

Layout of the store folder:
    kernels/<owner>/<slug>/<version>/   the pushed kernel, its run root and status.json
                                        (a kernel_sources entry mounts a run's root/working)
    datasets/<owner>/<slug>/<version>/  published files
    models/<owner>/<model>/<framework>/<variation>/<version>/   model versions' files
    submissions.jsonl                   one line per submission
Runs execute in background threads (each in its own Python kernel), so the chain
can follow several at once, as it does on Kaggle.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from kernelgen.backends.base import (
    DatasetStatus,
    GpuQuota,
    KernelOutput,
    KernelState,
    PublishResult,
    PushResult,
    RunStatus,
    SubmissionState,
    SubmissionStatus,
    Submitted,
)
from kernelgen.backends.execute import DEFAULT_JUPYTER_KERNEL, execute_notebook
from kernelgen.errors import BackendError
from kernelgen.files import write_atomic, write_json_atomic

STATUS_FILE = "status.json"
LIVE_LOG = "live.log"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"{path}: cannot read ({exc})") from None


def _write_status(run_dir: Path, status: RunStatus, message: str = "") -> None:
    write_json_atomic(run_dir / STATUS_FILE, {"status": status.value, "message": message})


def _copy_files(folder: Path, dest: Path, *, skip: tuple[str, ...]) -> None:
    """A dataset or model version's files, folders included. (The official client uploads
    a folder as a zip archive; `Layout.cells` reads a cell from the folder or the archive.)"""
    for path in sorted(folder.iterdir()):
        if path.name in skip:
            continue
        if path.is_dir():
            shutil.copytree(path, dest / path.name)
        elif path.is_file():
            shutil.copy2(path, dest / path.name)


def _versions(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _pick_version(folder: Path, ref: str, what: str) -> Path:
    """The folder of `owner/slug/N`, or of the latest version for `owner/slug`."""
    parts = ref.split("/")
    versions = _versions(folder)
    version = int(parts[2]) if len(parts) > 2 else (versions[-1] if versions else None)
    if version is None or version not in versions:
        raise BackendError(f"{what} {ref} does not exist in the local store")
    return folder / str(version)


class LocalBackend:
    """Runs pushed notebooks here; `competition_dirs` maps competition slugs to data folders,
    `packages` names the project's packages, which a kernel must not import from the project,
    and `jupyter_kernel` the Jupyter kernel that runs the notebooks."""

    name = "local"
    draws_quota = False

    def __init__(
        self,
        store: Path,
        competition_dirs: dict[str, Path],
        *,
        workers: int = 2,
        timeout: int | None = None,
        packages: tuple[str, ...] = (),
        jupyter_kernel: str = DEFAULT_JUPYTER_KERNEL,
    ) -> None:
        self.store = store.resolve()
        self.competition_dirs = {slug: path.resolve() for slug, path in competition_dirs.items()}
        self.timeout = timeout
        self.packages = packages
        self.jupyter_kernel = jupyter_kernel
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kernelgen-local")
        self._futures: dict[Path, Future[None]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _kernel_dir(self, kernel: str) -> Path:
        owner, slug = kernel.split("/")[:2]
        return self.store / "kernels" / owner / slug

    def _dataset_dir(self, dataset: str) -> Path:
        owner, slug = dataset.split("/")[:2]
        return self.store / "datasets" / owner / slug

    def _run_dir(self, kernel: str) -> Path:
        return _pick_version(self._kernel_dir(kernel), kernel, "kernel")

    def _new_version(self, base: Path) -> tuple[int, Path]:
        """Reserve the next version folder under `base`."""
        with self._lock:
            version = (_versions(base) or [0])[-1] + 1
            folder = base / str(version)
            folder.mkdir(parents=True)
        return version, folder

    def _mount(self, root: Path, meta: dict) -> None:
        inputs = root / "input"
        inputs.mkdir(parents=True)
        for slug in meta.get("competition_sources", []):
            if slug not in self.competition_dirs:
                raise BackendError(f"no local data for competition {slug!r}")
            (inputs / slug).symlink_to(self.competition_dirs[slug].resolve(), target_is_directory=True)
        for ref in meta.get("dataset_sources", []):
            folder = _pick_version(self._dataset_dir(ref), ref, "dataset")
            (inputs / ref.split("/")[1]).symlink_to(folder, target_is_directory=True)
        for ref in meta.get("model_sources", []):  # a model version, where newer images mount it
            parts = ref.split("/")
            folder = self._model_dir(ref) / parts[-1]
            if len(parts) != 5 or not folder.is_dir():
                raise BackendError(f"model {ref} does not exist in the local store")
            mount = inputs / "models" / ref
            mount.parent.mkdir(parents=True, exist_ok=True)
            mount.symlink_to(folder, target_is_directory=True)
        for ref in meta.get("kernel_sources", []):  # another run's outputs, where Kaggle mounts them
            owner, slug = ref.split("/")[:2]
            working = self._run_dir(ref) / "root" / "working"
            if not working.is_dir():
                raise BackendError(f"kernel {ref} has no outputs in the local store")
            mount = inputs / "notebooks" / owner / slug
            mount.parent.mkdir(parents=True, exist_ok=True)
            mount.symlink_to(working, target_is_directory=True)

    def push(self, folder: Path) -> PushResult:
        meta = _read_json(folder / "kernel-metadata.json")
        kernel = meta["id"]
        version, run_dir = self._new_version(self._kernel_dir(kernel))
        shutil.copytree(folder, run_dir / "kernel")
        root = run_dir / "root"
        try:
            self._mount(root, meta)
        except BackendError as exc:
            _write_status(run_dir, RunStatus.ERROR, str(exc))
            raise
        _write_status(run_dir, RunStatus.QUEUED)
        notebook = (folder / meta["code_file"]).read_bytes()
        self._futures[run_dir] = self._pool.submit(self._execute, run_dir, root, notebook, kernel)
        return PushResult(kernel=kernel, version=version, url=run_dir.as_uri())

    def _execute(self, run_dir: Path, root: Path, notebook: bytes, kernel: str) -> None:
        _write_status(run_dir, RunStatus.RUNNING)
        try:
            result = execute_notebook(
                notebook,
                root,
                working=root / "working",
                timeout=self.timeout,
                kernel_name=self.jupyter_kernel,
                packages=self.packages,
                live_log=run_dir / LIVE_LOG,
            )
        except Exception as exc:
            write_atomic(run_dir / "log.txt", f"{type(exc).__name__}: {exc}\n")
            _write_status(run_dir, RunStatus.ERROR, str(exc))
            return
        write_atomic(run_dir / "log.txt", result.log)
        _write_status(run_dir, RunStatus.COMPLETE if result.ok else RunStatus.ERROR, result.error)

    def status(self, kernel: str) -> KernelState:
        run_dir = self._run_dir(kernel)
        if not (run_dir / STATUS_FILE).is_file():
            return KernelState(RunStatus.LOST, "the local push did not finish (the process making it ended)")
        record = _read_json(run_dir / STATUS_FILE)
        status = RunStatus(record["status"])
        if not status.finished and run_dir not in self._futures:
            return KernelState(RunStatus.LOST, "the local run was interrupted (the process running it ended)")
        return KernelState(status, record.get("message", ""))

    def output(self, kernel: str, dest: Path) -> KernelOutput:
        run_dir = self._run_dir(kernel)
        dest.mkdir(parents=True, exist_ok=True)
        files = []
        working = run_dir / "root" / "working"
        if working.is_dir():
            for path in sorted(working.rglob("*")):
                if path.is_file():
                    target = dest / path.relative_to(working)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                    files.append(target)
        log_file = run_dir / "log.txt"
        log = log_file.read_text(encoding="utf-8") if log_file.is_file() else ""
        (dest / f"{kernel.split('/')[1]}.log").write_text(log, encoding="utf-8")
        return KernelOutput(files=files, log=log)

    def log_stream(self, kernel: str) -> Iterator[str]:
        """The lines of the cells run so far (the whole log once the run has ended)."""
        run_dir = self._run_dir(kernel)
        finished = RunStatus(_read_json(run_dir / STATUS_FILE)["status"]).finished
        source = run_dir / ("log.txt" if finished else LIVE_LOG)
        text = source.read_text(encoding="utf-8") if source.is_file() else ""
        for line in text.splitlines(keepends=True):
            if finished or line.endswith("\n"):
                yield line

    def latest_version(self, kernel: str) -> int | None:
        versions = _versions(self._kernel_dir(kernel))
        return versions[-1] if versions else None

    def publish(self, folder: Path) -> PublishResult:
        """A new version folder, filled under a hidden name and renamed whole into place."""
        meta = _read_json(folder / "dataset-metadata.json")
        dataset = meta["id"]
        base = self._dataset_dir(dataset)
        base.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=base, prefix=".partial-"))
        _copy_files(folder, scratch, skip=("dataset-metadata.json",))
        with self._lock:
            version = (_versions(base) or [0])[-1] + 1
            target = base / str(version)
            scratch.rename(target)
        return PublishResult(dataset=dataset, created=version == 1, url=target.as_uri())

    def dataset_status(self, dataset: str) -> DatasetStatus:
        return DatasetStatus.READY if _versions(self._dataset_dir(dataset)) else DatasetStatus.ERROR

    def dataset_version(self, dataset: str) -> int | None:
        versions = _versions(self._dataset_dir(dataset))
        return versions[-1] if versions else None

    def submit(
        self, competition: str, kernel: str, version: int, file_name: str, message: str
    ) -> Submitted:
        output = self._run_dir(f"{kernel}/{version}") / "root" / "working" / file_name
        if not output.is_file():
            raise BackendError(f"kernel {kernel} version {version} has no output {file_name}")
        with self._lock:
            ref = len(self._submission_records()) + 1
            record = {
                "ref": ref,
                "competition": competition,
                "kernel": kernel,
                "version": version,
                "file": file_name,
                "message": message,
            }
            with (self.store / "submissions.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        return Submitted(
            ref, f"recorded a local submission of {kernel} version {version} ({file_name})"
        )

    def _submission_records(self) -> list[dict]:
        path = self.store / "submissions.jsonl"
        if not path.is_file():
            return []
        return [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]

    def _submission_state(self, record: dict) -> SubmissionState:
        return SubmissionState(
            ref=record.get("ref"),
            status=SubmissionStatus.COMPLETE,
            message="local submissions are recorded, not scored",
            description=record.get("message", ""),
            file_name=record.get("file", ""),
        )

    def submission(self, competition: str, ref: int) -> SubmissionState:
        for record in self._submission_records():
            if record.get("ref") == ref and record.get("competition") == competition:
                return self._submission_state(record)
        raise BackendError(f"no local submission {ref} to {competition}")

    def submissions(self, competition: str) -> list[SubmissionState]:
        found = [r for r in self._submission_records() if r.get("competition") == competition]
        return [self._submission_state(r) for r in reversed(found)]

    def publish_model(self, folder: Path) -> PublishResult:
        """A new version folder of the model instance, filled under a hidden name and renamed
        whole into place."""
        model = _read_json(folder / "model-metadata.json")
        instance = _read_json(folder / "model-instance-metadata.json")
        handle = f"{model['ownerSlug']}/{model['slug']}/{instance['framework']}/{instance['instanceSlug']}"
        base = self._model_dir(handle)
        base.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=base, prefix=".partial-"))
        _copy_files(folder, scratch, skip=("model-metadata.json", "model-instance-metadata.json"))
        with self._lock:
            version = (_versions(base) or [0])[-1] + 1
            target = base / str(version)
            scratch.rename(target)
        return PublishResult(dataset=handle, created=version == 1, url=target.as_uri())

    def model_version(self, instance: str) -> int | None:
        versions = _versions(self._model_dir(instance))
        return versions[-1] if versions else None

    def _model_dir(self, handle: str) -> Path:
        owner, model, framework, variation = handle.split("/")[:4]
        return self.store / "models" / owner / model / framework / variation

    def quota(self) -> GpuQuota | None:
        """Runs here draw on no quota."""
        return None
