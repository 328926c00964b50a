"""A local stand-in for Kaggle's API that the unmodified official client talks to.

How the client reaches it: with ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` the client
sends every call as ``POST http://localhost/api/v1/<Service>/<Method>`` (port 80).
``requests`` honours ``HTTP_PROXY``, so pointing the proxy variables at this
server makes it receive those calls as proxy requests (absolute URIs), on any
port, without touching the client's code path. :func:`use_standin` sets that
up; ``HTTPS_PROXY`` points here too, so a client that somehow targeted
``https://api.kaggle.com`` would hit this server's CONNECT refusal instead of
the internet (recorded as method ``CONNECT``).

What it speaks (JSON bodies, camelCase field names as the client sends them):

- ``kernels.KernelsApiService``: ``SaveKernel``, ``GetKernel``,
  ``GetKernelSessionStatus``, ``ListKernelSessionOutput`` (paged; file URLs are
  signed URLs served here; ``log`` is Kaggle's JSON list of stream records).
- ``blobs.BlobApiService/StartBlobUpload``, then ``PUT`` to the signed
  ``createUrl``; ``datasets.DatasetApiService``: ``CreateDataset``,
  ``CreateDatasetVersion``, ``GetDatasetStatus``, ``GetDataset``.
- ``competitions.CompetitionApiService``: ``CreateCodeSubmission``, ``GetSubmission``
  and ``ListSubmissions``; a submission is scored after ``SubmissionScript``'s pending
  polls, or ends in an error.
- ``models.ModelApiService``: ``GetModel`` and ``GetModelInstance`` (404 until
  created), ``CreateModel``, ``CreateModelInstance`` (its files are version 1) and
  ``CreateModelInstanceVersion``; a new version becomes the instance's current one
  after ``ModelScript``'s processing polls, or never when it fails. Kernels read
  versions through ``modelDataSources`` (unknown ones come back in
  ``invalidModelSources``).
- ``GET /api/v1/kernels/logs/stream/<owner>/<slug>?versionLabel=vN``: a running
  version's log as server-sent events (see ``KernelScript.running_log``), the
  saved log as a JSON list once it has finished.
- ``kernels.KernelsApiService/GetAcceleratorQuotaStatistics``: the figures in
  ``gpu_quota`` (durations as ``"<seconds>s"``, the refresh time in UTC).
- ``security.OAuthService/IntrospectToken`` (for ``KAGGLE_API_TOKEN``).

Errors are sent the way the client expects them: an HTTP status with a JSON body
``{"code": <status>, "message": ...}``.

Kernel execution is a seam: ``executor(PushedKernel) -> ExecutedKernel`` runs
when a pushed version's scripted timeline says it has finished, synchronously,
inside the status call that observes the end. A poll loop on a fake clock thus
sees exactly the scripted number of QUEUED/RUNNING answers however long the real
execution takes. :func:`fake_executor` is the default; real notebook execution
plugs in the same way, resolving ``dataset_sources`` with
``pushed.dataset_dir("owner/slug")`` and ``kernel_sources`` with
``pushed.kernel_dir("owner/slug/version")``; a push naming a kernel version that
has not finished gets it back in ``invalidKernelSources``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import threading
import time
import traceback
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kernelgen.backends.base import RunStatus

SESSION_CAP_SECONDS = 12 * 3600
LOG_STREAM = "/api/v1/kernels/logs/stream/"

# -- the executor seam -------------------------------------------------------------------


@dataclass(frozen=True)
class PushedKernel:
    """One pushed kernel version, as the server received it."""

    owner: str
    slug: str
    version: int
    title: str
    text: str
    language: str
    kernel_type: str
    enable_gpu: bool
    enable_internet: bool
    dataset_sources: tuple[str, ...]
    competition_sources: tuple[str, ...]
    kernel_sources: tuple[str, ...]
    scratch_dir: Path
    resolve_dataset: Callable[[str], Path] = field(repr=False, compare=False)
    model_sources: tuple[str, ...] = ()
    resolve_model: Callable[[str], Path] | None = field(default=None, repr=False, compare=False)
    machine_shape: str | None = None
    session_timeout_seconds: int | None = None
    docker_image_pinning_type: str | None = None
    resolve_kernel: Callable[[str], Path] | None = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"

    def notebook(self) -> dict[str, Any]:
        """The pushed text parsed as a notebook (cell sources are single strings)."""
        return dict(json.loads(self.text))

    def dataset_dir(self, source: str) -> Path:
        """The folder holding the files of dataset ``owner/slug`` (latest version)."""
        return self.resolve_dataset(source)

    def kernel_dir(self, source: str) -> Path:
        """The output folder of kernel source ``owner/slug/version`` (latest without one)."""
        assert self.resolve_kernel is not None
        return self.resolve_kernel(source)

    def model_dir(self, source: str) -> Path:
        """The files of model source ``owner/model/framework/variation/version``."""
        assert self.resolve_model is not None
        return self.resolve_model(source)


@dataclass(frozen=True)
class ExecutedKernel:
    """What a run left behind: its final status, a folder of output files and its log."""

    status: RunStatus
    output_dir: Path | None = None
    log: str = ""
    failure_message: str = ""


Executor = Callable[[PushedKernel], ExecutedKernel]


def fake_executor(pushed: PushedKernel) -> ExecutedKernel:
    """Completes every kernel: writes ``result.txt`` naming it and the input files it saw."""
    out = pushed.scratch_dir / "output"
    out.mkdir(parents=True, exist_ok=True)
    cells = pushed.notebook().get("cells", []) if pushed.kernel_type == "notebook" else []
    lines = [f"{pushed.ref} v{pushed.version}: {len(cells)} cells"]
    for source in pushed.dataset_sources:
        folder = pushed.dataset_dir(source)
        lines.extend(f"{source}/{p.name}" for p in sorted(folder.iterdir()))
    for source in pushed.kernel_sources:
        folder = pushed.kernel_dir(source)
        lines.extend(f"{source}/{p.name}" for p in sorted(folder.iterdir()))
    (out / "result.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = "".join(f"{line}\n" for line in ["starting", *lines, "done"])
    return ExecutedKernel(status=RunStatus.COMPLETE, output_dir=out, log=log)


# -- scripts and faults ------------------------------------------------------------------


@dataclass(frozen=True)
class KernelScript:
    """How a pushed version's status moves, counted in status polls of that version.

    Polls ``1..queued_polls`` answer QUEUED, the next ``running_polls`` RUNNING,
    and the one after runs the executor and answers its outcome. ``run_seconds``
    also keeps it RUNNING until that much time passed on the stand-in's clock
    since the push. ``stuck`` never leaves RUNNING; ``cancel`` ends in
    CANCEL_ACKNOWLEDGED without running.

    ``running_log`` is what the kernel prints while it runs: each RUNNING answer
    makes one more line of it readable on the live log stream, and the saved log
    starts with all of it. The first live stream connection that has more than
    ``cut_stream_after`` events to send is cut after sending that many, mid-response.
    """

    queued_polls: int = 0
    running_polls: int = 1
    run_seconds: float = 0.0
    stuck: bool = False
    cancel: bool = False
    running_log: tuple[str, ...] = ()
    cut_stream_after: int | None = None


@dataclass(frozen=True)
class DatasetScript:
    """A new dataset version answers a processing state for this many status polls."""

    processing_polls: int = 0
    processing_seconds: float = 0.0
    fail: bool = False


@dataclass(frozen=True)
class ModelScript:
    """A new model version stays processing (not the instance's current version) for this
    many polls of the instance; with ``fail`` it never becomes available."""

    processing_polls: int = 0
    fail: bool = False


@dataclass(frozen=True)
class SubmissionScript:
    """A submission answers PENDING for ``pending_polls`` polls, then COMPLETE with these
    scores (``private_score`` None: the competition has not ended), or ERROR with
    ``error``."""

    pending_polls: int = 1
    public_score: float = 0.88536
    private_score: float | None = None
    error: str = ""


@dataclass(frozen=True)
class Fault:
    """One injected failure of one request.

    ``status`` answers that HTTP status (with ``headers``); ``drop`` closes the
    socket without an answer. With ``after_processing`` the request takes effect
    first and only the answer is lost, the case where retrying naively does the
    work twice. ``delay`` waits (really) before answering; ``hold`` waits (really)
    after the work is done and before the answer, the window in which a client that
    dies never learns what its request did.
    """

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    message: str = "injected fault"
    drop: bool = False
    after_processing: bool = False
    delay: float = 0.0
    hold: float = 0.0

    @classmethod
    def http(cls, status: int, message: str = "injected fault", **kw: Any) -> Fault:
        return cls(status=status, message=message, **kw)

    @classmethod
    def rate_limited(cls, retry_after: float | str) -> Fault:
        return cls(
            status=429, headers={"Retry-After": str(retry_after)}, message="Too many requests"
        )

    @classmethod
    def dropped(cls, *, after_processing: bool = False) -> Fault:
        return cls(drop=True, after_processing=after_processing)


@dataclass(frozen=True)
class QuotaFigures:
    """The week's GPU quota the stand-in reports, in hours."""

    used: float = 0.0
    reserved: float = 0.0
    allowed: float = 30.0
    refreshes: datetime = datetime(2030, 1, 7, 0, 0)


@dataclass(frozen=True)
class RequestRecord:
    """One request the server saw; ``status`` is None when the connection was dropped."""

    method: str
    verb: str
    status: int | None
    user: str | None
    body: Any = field(repr=False, default=None)


# -- state -------------------------------------------------------------------------------


@dataclass
class KernelVersion:
    number: int
    pushed: PushedKernel
    script: KernelScript
    pushed_at: float
    polls: int = 0
    wire_status: str = "QUEUED"
    finished: bool = False
    failure_message: str = ""
    log: str = ""
    output_dir: Path | None = None
    running_answers: int = 0
    streams: int = 0
    stream_cut: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def printed(self) -> list[str]:
        """Lines the run has printed so far: one more of the script's per RUNNING answer."""
        lines = self.script.running_log
        return list(lines) if self.finished else list(lines[: self.running_answers])

    def output_files(self) -> list[str]:
        if self.output_dir is None or not self.output_dir.is_dir():
            return []
        return sorted(
            p.relative_to(self.output_dir).as_posix()
            for p in self.output_dir.rglob("*")
            if p.is_file()
        )


@dataclass
class KernelRecord:
    owner: str
    slug: str
    title: str
    kernel_id: int
    versions: list[KernelVersion] = field(default_factory=list)


@dataclass
class DatasetVersion:
    number: int
    folder: Path
    script: DatasetScript
    created_at: float
    notes: str = ""
    polls: int = 0


@dataclass
class DatasetRecord:
    owner: str
    slug: str
    title: str
    license_name: str
    versions: list[DatasetVersion] = field(default_factory=list)


@dataclass
class ModelVersion:
    number: int
    folder: Path
    script: ModelScript
    polls: int = 0

    @property
    def ready(self) -> bool:
        return not self.script.fail and self.polls > self.script.processing_polls


@dataclass
class ModelInstance:
    framework: str
    slug: str
    license_name: str
    versions: list[ModelVersion] = field(default_factory=list)


@dataclass
class ModelRecord:
    owner: str
    slug: str
    title: str
    is_private: bool
    instances: dict[tuple[str, str], ModelInstance] = field(default_factory=dict)


@dataclass
class Blob:
    name: str
    content_length: int
    data: bytes | None = None


@dataclass
class Submission:
    ref: int
    competition: str
    kernel: str
    version: int | None
    file_name: str
    description: str
    script: SubmissionScript = field(default_factory=SubmissionScript)
    submitted_at: str = ""
    polls: int = 0

    def state(self, *, count: bool) -> tuple[str, float | None, float | None, str]:
        """(status, public score, private score, error) as the next poll answers them."""
        seen = self.polls
        if count:
            self.polls += 1
        if seen < self.script.pending_polls:
            return "PENDING", None, None, ""
        if self.script.error:
            return "ERROR", None, None, self.script.error
        return "COMPLETE", self.script.public_score, self.script.private_score, ""


class _Fail(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Reply:
    """An answer; a `declared_length` above the body's is a response cut short."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False
    declared_length: int | None = None


def _json_reply(payload: Mapping[str, Any], status: int = 200) -> _Reply:
    return _Reply(status=status, body=json.dumps(payload).encode())


def _error_reply(status: int, message: str, headers: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(
        status=status,
        body=json.dumps({"code": status, "message": message}).encode(),
        headers=dict(headers or {}),
    )


# -- the server --------------------------------------------------------------------------


class KaggleStandIn:
    """Kaggle's API for the calls kernelgen makes, on 127.0.0.1 at a random port.

    Use as a context manager (``with KaggleStandIn(tmp_path) as kaggle: ...``);
    tests point the client at it with :func:`use_standin`.
    """

    def __init__(
        self,
        root: Path,
        *,
        executor: Executor = fake_executor,
        credentials: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        output_page_size: int = 20,
        kernel_script: KernelScript | None = None,
        dataset_script: DatasetScript | None = None,
        gpu_quota: QuotaFigures | None = None,
    ) -> None:
        self.root = Path(root)
        self.executor = executor
        self.credentials = dict(credentials or {})
        self.tokens = dict(tokens or {})
        self.clock = clock
        self.output_page_size = output_page_size
        self.default_kernel_script = kernel_script or KernelScript()
        self.default_dataset_script = dataset_script or DatasetScript()
        self.gpu_quota = gpu_quota or QuotaFigures()
        self.kernels: dict[str, KernelRecord] = {}
        self.datasets: dict[str, DatasetRecord] = {}
        self.models: dict[str, ModelRecord] = {}
        self.submissions: list[Submission] = []
        self.submission_script = SubmissionScript()
        self.requests: list[RequestRecord] = []
        self._blobs: dict[str, Blob] = {}
        self._signed: dict[str, Path] = {}
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._kernel_scripts: dict[str, KernelScript] = {}
        self._dataset_scripts: dict[str, DatasetScript] = {}
        self._model_scripts: dict[str, ModelScript] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> KaggleStandIn:
        standin = self

        class Handler(_Handler):
            pass

        Handler.standin = standin
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KaggleStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Where the server listens, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def web_url(self) -> str:
        return "http://localhost"

    def client_env(self) -> dict[str, str]:
        """Environment variables that send the official client here."""
        env = {"KAGGLE_API_ENVIRONMENT": "LOCALHOST"}
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            env[name] = self.url
        return env

    # -- scripting ----------------------------------------------------------------------

    def inject(self, method: str, *faults: Fault) -> None:
        """Queue faults for the next requests of ``method`` (an RPC name such as
        ``SaveKernel``, or ``Upload`` / ``Download`` for the signed URLs)."""
        with self._lock:
            self._faults[method].extend(faults)

    def script_kernel(self, ref: str, script: KernelScript) -> None:
        """Use ``script`` for versions of ``owner/slug`` pushed from now on."""
        with self._lock:
            self._kernel_scripts[ref] = script

    def script_model(self, instance: str, script: ModelScript) -> None:
        """Use ``script`` for versions of ``owner/model/framework/variation`` made from now on."""
        with self._lock:
            self._model_scripts[instance] = script

    def model_dir(self, source: str) -> Path:
        """The files of model version ``owner/model/framework/variation/version``."""
        owner, model, framework, variation, number = source.split("/")
        with self._lock:
            record = self.models.get(f"{owner}/{model}")
            instance = record.instances.get((framework, variation)) if record else None
            for version in instance.versions if instance else []:
                if str(version.number) == number and version.ready:
                    return version.folder
        raise KeyError(f"no available model version {source} on the stand-in")

    def script_dataset(self, ref: str, script: DatasetScript) -> None:
        """Use ``script`` for versions of dataset ``owner/slug`` created from now on."""
        with self._lock:
            self._dataset_scripts[ref] = script

    def seed_dataset(self, ref: str, files: Mapping[str, bytes | str], *, title: str = "") -> Path:
        """Create a ready dataset (version 1) directly, as if published earlier."""
        owner, slug = ref.split("/")
        with self._lock:
            record = self.datasets.setdefault(
                ref, DatasetRecord(owner, slug, title or slug, "CC0-1.0")
            )
            folder = self._new_dataset_folder(record)
            for name, data in files.items():
                payload = data.encode() if isinstance(data, str) else data
                (folder / name).write_bytes(payload)
            record.versions.append(
                DatasetVersion(len(record.versions) + 1, folder, DatasetScript(), self.clock())
            )
            return folder

    # -- inspection ---------------------------------------------------------------------

    def count(self, method: str) -> int:
        """How many requests of ``method`` arrived (answered or not)."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == method)

    def calls(self, method: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method == method]

    def kernel_versions(self, ref: str) -> list[KernelVersion]:
        with self._lock:
            record = self.kernels.get(ref)
            return list(record.versions) if record else []

    def dataset_versions(self, ref: str) -> list[DatasetVersion]:
        with self._lock:
            record = self.datasets.get(ref)
            return list(record.versions) if record else []

    def dataset_dir(self, owner_slug: str, version: int | None = None) -> Path:
        """The folder with the files of a dataset version (latest by default)."""
        with self._lock:
            record = self.datasets.get(owner_slug)
            if record is None or not record.versions:
                raise KeyError(f"no dataset {owner_slug} on the stand-in")
            if version is None:
                return record.versions[-1].folder
            for item in record.versions:
                if item.number == version:
                    return item.folder
            raise KeyError(f"dataset {owner_slug} has no version {version}")

    def stored_files(self) -> Iterator[Path]:
        """Every file the server keeps (kernel outputs, datasets, blobs)."""
        yield from (p for p in self.root.rglob("*") if p.is_file())

    # -- request handling ---------------------------------------------------------------

    def handle(self, verb: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Answer one HTTP request; called by the handler thread."""
        if verb == "CONNECT":
            self._record("CONNECT", verb, 405, None, target)
            return _error_reply(405, "the stand-in does not tunnel")
        path = urlsplit(target).path if "://" in target else target.split("?", 1)[0]
        if path.startswith("/api/v1/") and verb == "POST":
            _service, _, method = path[len("/api/v1/") :].partition("/")
            return self._rpc(method, headers, body)
        if path.startswith("/storage/upload/") and verb == "PUT":
            return self._with_faults(
                "Upload",
                verb,
                None,
                None,
                lambda: self._upload(path.rsplit("/", 1)[1], headers, body),
            )
        if path.startswith("/storage/output/") and verb == "GET":
            return self._with_faults(
                "Download", verb, None, None, lambda: self._download(path.rsplit("/", 1)[1])
            )
        if path.startswith(LOG_STREAM) and verb == "GET":
            owner, _, slug = path[len(LOG_STREAM) :].partition("/")
            label = parse_qs(urlsplit(target).query).get("versionLabel", [""])[0]
            user = self._authenticate(headers)
            query = {"userName": owner, "kernelSlug": slug, "versionLabel": label}
            if user is None:
                self._record("LogStream", verb, 401, None, query)
                return _error_reply(401, "Unauthenticated")
            return self._with_faults("LogStream", verb, user, query, lambda: self._log_stream(query))
        self._record("unknown", verb, 404, None, path)
        return _error_reply(404, f"no route for {verb} {path}")

    def _rpc(self, method: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            self._record(method, "POST", 400, None, None)
            return _error_reply(400, "request body is not JSON")
        handler = getattr(self, f"_rpc_{method}", None)
        if handler is None:
            self._record(method, "POST", 404, None, payload)
            return _error_reply(404, f"unknown method {method}")
        user = None
        if method != "IntrospectToken":
            user = self._authenticate(headers)
            if user is None:
                self._record(method, "POST", 401, None, payload)
                return _error_reply(401, "Unauthenticated")
        return self._with_faults(method, "POST", user, payload, lambda: handler(user, payload))

    def _with_faults(
        self,
        method: str,
        verb: str,
        user: str | None,
        payload: Any,
        work: Callable[[], Any],
    ) -> _Reply:
        with self._lock:
            queue = self._faults.get(method)
            fault = queue.popleft() if queue else None
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and not fault.after_processing and (fault.drop or fault.status):
            return self._fault_reply(method, verb, user, payload, fault)
        try:
            result = work()
        except _Fail as exc:
            self._record(method, verb, exc.status, user, payload)
            return _error_reply(exc.status, exc.message)
        if fault is not None and fault.hold:
            time.sleep(fault.hold)
        if fault is not None and (fault.drop or fault.status):
            return self._fault_reply(method, verb, user, payload, fault)
        reply = result if isinstance(result, _Reply) else _json_reply(result)
        self._record(method, verb, reply.status, user, payload)
        return reply

    def _fault_reply(
        self, method: str, verb: str, user: str | None, payload: Any, fault: Fault
    ) -> _Reply:
        if fault.drop:
            self._record(method, verb, None, user, payload)
            return _Reply(status=0, drop=True)
        assert fault.status is not None
        self._record(method, verb, fault.status, user, payload)
        return _error_reply(fault.status, fault.message, fault.headers)

    def _record(
        self, method: str, verb: str, status: int | None, user: str | None, body: Any
    ) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, verb, status, user, body))

    def _authenticate(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get("Authorization", "")
        scheme, _, credential = value.partition(" ")
        if scheme == "Basic":
            try:
                user, _, key = base64.b64decode(credential).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user if user and self.credentials.get(user) == key else None
        if scheme == "Bearer":
            return self.tokens.get(credential)
        return None

    # -- kernels ------------------------------------------------------------------------

    def _rpc_SaveKernel(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        ref = body.get("slug")
        if not isinstance(ref, str) or ref.count("/") != 1:
            raise _Fail(400, "slug must be owner/kernel-slug")
        owner, slug = ref.split("/")
        if owner != user:
            raise _Fail(403, f"Permission denied: {user} cannot save kernels of {owner}")
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise _Fail(400, "kernel text is required")
        if body.get("language") not in ("python", "r") or body.get("kernelType") not in (
            "notebook",
            "script",
        ):
            raise _Fail(400, "invalid language or kernel type")
        timeout = body.get("sessionTimeoutSeconds")
        if timeout is not None and not 0 < int(timeout) <= SESSION_CAP_SECONDS:
            raise _Fail(400, f"sessionTimeoutSeconds must be at most {SESSION_CAP_SECONDS}")
        if body.get("dockerImagePinningType") not in (None, "original", "latest"):
            raise _Fail(400, "invalid docker image pinning type")
        with self._lock:
            record = self.kernels.get(ref)
            if record is None:
                record = KernelRecord(
                    owner, slug, body.get("newTitle") or slug, len(self.kernels) + 1
                )
                self.kernels[ref] = record
            number = len(record.versions) + 1
            scratch = self.root / "kernels" / owner / slug / f"v{number}" / "scratch"
            scratch.mkdir(parents=True, exist_ok=True)
            dataset_sources = tuple(body.get("datasetDataSources") or ())
            invalid = [s for s in dataset_sources if s not in self.datasets]
            kernel_sources = tuple(body.get("kernelDataSources") or ())
            invalid_kernels = [s for s in kernel_sources if self._finished_output(s) is None]
            model_sources = tuple(body.get("modelDataSources") or ())
            invalid_models = [s for s in model_sources if not self._model_available(s)]
            pushed = PushedKernel(
                owner=owner,
                slug=slug,
                version=number,
                title=body.get("newTitle") or record.title,
                text=text,
                language=body["language"],
                kernel_type=body["kernelType"],
                enable_gpu=bool(body.get("enableGpu")),
                enable_internet=bool(body.get("enableInternet")),
                dataset_sources=dataset_sources,
                competition_sources=tuple(body.get("competitionDataSources") or ()),
                kernel_sources=kernel_sources,
                scratch_dir=scratch,
                resolve_dataset=self.dataset_dir,
                resolve_kernel=self.kernel_output_dir,
                model_sources=model_sources,
                resolve_model=self.model_dir,
                machine_shape=body.get("machineShape"),
                session_timeout_seconds=None if timeout is None else int(timeout),
                docker_image_pinning_type=body.get("dockerImagePinningType"),
            )
            script = self._kernel_scripts.get(ref, self.default_kernel_script)
            record.versions.append(KernelVersion(number, pushed, script, self.clock()))
        return {
            "ref": f"/code/{ref}",
            "url": f"{self.web_url}/code/{ref}",
            "versionNumber": number,
            "kernelId": record.kernel_id,
            "invalidDatasetSources": invalid,
            "invalidKernelSources": invalid_kernels,
            "invalidModelSources": invalid_models,
        }

    def _kernel_version(self, body: dict[str, Any]) -> KernelVersion:
        ref = f"{body.get('userName', '')}/{body.get('kernelSlug', '')}"
        label = str(body.get("versionLabel") or "")
        with self._lock:
            record = self.kernels.get(ref)
            if record is None or not record.versions:
                raise _Fail(404, f"Kernel {ref} not found")
            if not label:
                return record.versions[-1]
            number = label[1:] if label.startswith("v") else label
            for version in record.versions:
                if str(version.number) == number:
                    return version
        raise _Fail(404, f"Kernel {ref} has no version {label}")

    def _finished_output(self, source: str) -> Path | None:
        """The output folder of a finished version named ``owner/slug[/version]``, else None."""
        owner, slug, *version = source.split("/")
        with self._lock:
            record = self.kernels.get(f"{owner}/{slug}")
            versions = list(record.versions) if record else []
        if version:
            versions = [v for v in versions if str(v.number) == version[0]]
        if not versions or not versions[-1].finished:
            return None
        return versions[-1].output_dir

    def kernel_output_dir(self, source: str) -> Path:
        """What a kernel reading ``owner/slug[/version]`` through kernel_sources sees."""
        folder = self._finished_output(source)
        if folder is None:
            raise KeyError(f"no finished run of {source} on the stand-in")
        return folder

    def _rpc_GetKernel(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        version = self._kernel_version(body)
        pushed = version.pushed
        with self._lock:
            current = len(self.kernels[pushed.ref].versions)
        return {
            "metadata": {
                "ref": pushed.ref,
                "title": pushed.title,
                "author": pushed.owner,
                "slug": pushed.slug,
                "language": pushed.language,
                "kernelType": pushed.kernel_type,
                "enableGpu": pushed.enable_gpu,
                "enableInternet": pushed.enable_internet,
                "datasetDataSources": list(pushed.dataset_sources),
                "competitionDataSources": list(pushed.competition_sources),
                "currentVersionNumber": current,
            },
            "blob": {
                "source": pushed.text,
                "language": pushed.language,
                "kernelType": pushed.kernel_type,
                "slug": pushed.slug,
            },
        }

    def _rpc_GetKernelSessionStatus(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        version = self._kernel_version(body)
        self._advance(version)
        answer: dict[str, Any] = {}
        if version.wire_status != "QUEUED":  # proto3 JSON leaves the default value out
            answer["status"] = version.wire_status
        if version.failure_message:
            answer["failureMessage"] = version.failure_message
        return answer

    def _advance(self, version: KernelVersion) -> None:
        """Count one status poll and move the version along its script."""
        with version.lock:
            if version.finished:
                return
            version.polls += 1
            script = version.script
            if version.polls <= script.queued_polls:
                version.wire_status = "QUEUED"
                return
            still_running = (
                script.stuck
                or version.polls <= script.queued_polls + script.running_polls
                or self.clock() - version.pushed_at < script.run_seconds
            )
            if still_running:
                version.wire_status = "RUNNING"
                version.running_answers += 1
                return
            if script.cancel:
                version.wire_status = "CANCEL_ACKNOWLEDGED"
                version.finished = True
                return
            self._execute(version)

    def _execute(self, version: KernelVersion) -> None:
        pushed = version.pushed
        try:
            result = self.executor(pushed)
        except Exception as exc:
            result = ExecutedKernel(
                status=RunStatus.ERROR,
                log=traceback.format_exc(),
                failure_message=f"executor raised {type(exc).__name__}: {exc}",
            )
        output = pushed.scratch_dir.parent / "output"
        if output.exists():
            shutil.rmtree(output)
        if result.output_dir is not None and Path(result.output_dir).is_dir():
            shutil.copytree(result.output_dir, output)
        else:
            output.mkdir(parents=True)
        version.output_dir = output
        version.log = "".join(f"{line}\n" for line in version.script.running_log) + result.log
        version.failure_message = result.failure_message
        version.wire_status = {
            RunStatus.COMPLETE: "COMPLETE",
            RunStatus.CANCELLED: "CANCEL_ACKNOWLEDGED",
        }.get(result.status, "ERROR")
        version.finished = True

    def _log_stream(self, query: dict[str, Any]) -> _Reply:
        """A running version's log as server-sent events: every line printed so far, then
        the response ends as an idle cut does (so a test never waits on a held stream;
        the next connection replays from the start). A finished version answers its
        saved log as a JSON list, as Kaggle does."""
        version = self._kernel_version(query)
        if version.finished:
            return _Reply(status=200, body=_kaggle_log(version.log).encode())
        cut = version.script.cut_stream_after
        with version.lock:
            version.streams += 1
            lines = version.printed()
            cutting = cut is not None and not version.stream_cut and cut < len(lines)
            version.stream_cut = version.stream_cut or cutting
        events = [
            "data: " + json.dumps({"stream_name": "stdout", "time": round(0.1 * i, 1), "data": f"{line}\n"}) + "\n\n"
            for i, line in enumerate(lines)
        ]
        body = "".join(events).encode()
        if cutting:
            assert cut is not None
            return _Reply(
                status=200,
                body="".join(events[:cut]).encode(),
                content_type="text/event-stream",
                declared_length=len(body),
            )
        return _Reply(status=200, body=body, content_type="text/event-stream")

    def _rpc_ListKernelSessionOutput(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        version = self._kernel_version(body)
        if not version.finished:
            return {}
        names = version.output_files()
        start = int(body.get("pageToken") or 0)
        size = min(int(body.get("pageSize") or 20), self.output_page_size)
        page = names[start : start + size]
        files = []
        with self._lock:
            for name in page:
                token = secrets.token_hex(8)
                assert version.output_dir is not None
                self._signed[token] = version.output_dir / name
                files.append({"url": f"{self.url}/storage/output/{token}", "fileName": name})
        answer: dict[str, Any] = {"files": files}
        if version.log:
            answer["log"] = _kaggle_log(version.log)
        if start + size < len(names):
            answer["nextPageToken"] = str(start + size)
        return answer

    def _download(self, token: str) -> _Reply:
        with self._lock:
            path = self._signed.get(token)
        if path is None or not path.is_file():
            raise _Fail(404, "signed URL expired or unknown")
        return _Reply(status=200, body=path.read_bytes(), content_type="application/octet-stream")

    # -- blobs and datasets -------------------------------------------------------------

    def _rpc_StartBlobUpload(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _Fail(400, "blob name is required")
        token = f"blob-{secrets.token_hex(8)}"
        with self._lock:
            self._blobs[token] = Blob(name, int(body.get("contentLength") or 0))
        return {"token": token, "createUrl": f"{self.url}/storage/upload/{token}"}

    def _upload(self, token: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        with self._lock:
            blob = self._blobs.get(token)
            if blob is None:
                raise _Fail(404, "upload URL unknown or expired")
            content_range = headers.get("Content-Range", "")
            if content_range.startswith("bytes */"):
                if blob.data is not None and len(blob.data) == blob.content_length:
                    return _Reply(status=200, body=b"{}")
                raise _Fail(404, "upload expired")
            blob.data = body
        return _Reply(status=200, body=b"{}")

    def _take_files(self, files: list[dict[str, Any]]) -> list[Blob]:
        blobs = []
        for item in files:
            blob = self._blobs.get(str(item.get("token")))
            if blob is None or blob.data is None:
                raise _Fail(400, f"unknown or incomplete upload token {item.get('token')!r}")
            blobs.append(blob)
        if not blobs:
            raise _Fail(400, "a dataset version needs at least one file")
        return blobs

    def _new_dataset_folder(self, record: DatasetRecord) -> Path:
        number = len(record.versions) + 1
        folder = self.root / "datasets" / record.owner / record.slug / f"v{number}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _add_version(self, record: DatasetRecord, blobs: list[Blob], notes: str) -> None:
        folder = self._new_dataset_folder(record)
        for blob in blobs:
            assert blob.data is not None
            (folder / blob.name).write_bytes(blob.data)
        script = self._dataset_scripts.get(
            f"{record.owner}/{record.slug}", self.default_dataset_script
        )
        record.versions.append(
            DatasetVersion(len(record.versions) + 1, folder, script, self.clock(), notes)
        )

    def _rpc_CreateDataset(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        owner, slug = str(body.get("ownerSlug") or user), str(body.get("slug") or "")
        title = str(body.get("title") or "")
        if owner != user:
            raise _Fail(403, f"Permission denied: {user} cannot create datasets for {owner}")
        if not 6 <= len(slug) <= 50 or not 6 <= len(title) <= 50:
            raise _Fail(400, "slug and title must be 6 to 50 characters")
        if not body.get("licenseName"):
            raise _Fail(400, "a license is required")
        ref = f"{owner}/{slug}"
        with self._lock:
            if ref in self.datasets:
                return {"error": f'The requested slug "{slug}" is already in use'}
            blobs = self._take_files(list(body.get("files") or []))
            record = DatasetRecord(owner, slug, title, str(body["licenseName"]))
            self._add_version(record, blobs, "")
            self.datasets[ref] = record
        return {"ref": ref, "url": f"{self.web_url}/datasets/{ref}", "status": "ok"}

    def _rpc_CreateDatasetVersion(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        inner = body.get("body") or {}
        with self._lock:
            record = self.datasets.get(ref)
            if record is None:
                raise _Fail(404, f"Dataset {ref} not found")
            if record.owner != user:
                raise _Fail(403, f"Permission denied: {user} cannot version {ref}")
            if self._dataset_state(record.versions[-1], count=False) == "PROCESSING":
                return {"error": "The previous version of this dataset is still being processed"}
            blobs = self._take_files(list(inner.get("files") or []))
            self._add_version(record, blobs, str(inner.get("versionNotes") or ""))
        return {"ref": ref, "url": f"{self.web_url}/datasets/{ref}", "status": "ok"}

    def _dataset_record(self, body: dict[str, Any]) -> DatasetRecord:
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug', '')}"
        record = self.datasets.get(ref)
        if record is None:
            raise _Fail(404, f"Dataset {ref} not found")
        return record

    def _dataset_state(self, version: DatasetVersion, *, count: bool) -> str:
        script = version.script
        seen = version.polls
        if count:
            version.polls += 1
        if seen < script.processing_polls or (
            self.clock() - version.created_at < script.processing_seconds
        ):
            return "PROCESSING"
        return "FAILED" if script.fail else "READY"

    def _rpc_GetDatasetStatus(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record = self._dataset_record(body)
            state = self._dataset_state(record.versions[-1], count=True)
        return {"status": "BLOBS_RECEIVED" if state == "PROCESSING" else state}

    def _rpc_GetDataset(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record = self._dataset_record(body)
            ref = f"{record.owner}/{record.slug}"
            return {
                "ref": ref,
                "title": record.title,
                "url": f"{self.web_url}/datasets/{ref}",
                "ownerRef": record.owner,
                "licenseName": record.license_name,
                "currentVersionNumber": record.versions[-1].number,
            }

    # -- competitions and tokens ----------------------------------------------------------

    def _rpc_CreateCodeSubmission(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        owner, slug = str(body.get("kernelOwner") or ""), str(body.get("kernelSlug") or "")
        if owner != user:
            raise _Fail(403, f"Permission denied: {user} cannot submit {owner}/{slug}")
        label = body.get("kernelVersion")
        version = self._kernel_version(
            {"userName": owner, "kernelSlug": slug, "versionLabel": str(label or "")}
        )
        file_name = str(body.get("fileName") or "")
        if not version.finished or version.wire_status != "COMPLETE":
            raise _Fail(400, f"version {version.number} of {owner}/{slug} has not completed")
        if file_name not in version.output_files():
            raise _Fail(
                400, f"version {version.number} of {owner}/{slug} has no output {file_name}"
            )
        with self._lock:
            submission = Submission(
                ref=len(self.submissions) + 1,
                competition=str(body.get("competitionName") or ""),
                kernel=f"{owner}/{slug}",
                version=version.number,
                file_name=file_name,
                description=str(body.get("submissionDescription") or ""),
                script=self.submission_script,
                submitted_at=datetime(2030, 1, 1, 12, len(self.submissions) % 60).isoformat() + "Z",
            )
            self.submissions.append(submission)
        return {"message": "Your submission was successfully saved", "ref": submission.ref}

    def _submission_json(self, submission: Submission, *, count: bool) -> dict[str, Any]:
        status, public, private, error = submission.state(count=count)
        answer: dict[str, Any] = {
            "ref": submission.ref,
            "date": submission.submitted_at,
            "description": submission.description,
            "fileName": submission.file_name,
            "status": status,
            "submittedBy": submission.kernel.split("/")[0],
            "url": f"{self.web_url}/code/{submission.kernel}?scriptVersionId={submission.version}",
        }
        if public is not None:
            answer["publicScore"] = f"{public:.5f}"
        if private is not None:
            answer["privateScore"] = f"{private:.5f}"
        if error:
            answer["errorDescription"] = error
        return answer

    def _rpc_GetSubmission(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        ref = int(body.get("ref") or 0)
        with self._lock:
            for submission in self.submissions:
                if submission.ref == ref:
                    return self._submission_json(submission, count=True)
        raise _Fail(404, f"Submission {ref} not found")

    def _rpc_ListSubmissions(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        competition = str(body.get("competitionName") or "")
        with self._lock:
            mine = [s for s in self.submissions if s.competition == competition]
            return {"submissions": [self._submission_json(s, count=False) for s in reversed(mine)]}

    # -- models ---------------------------------------------------------------------------

    @staticmethod
    def _framework(value: object) -> str:
        """A framework as the client sends it (`MODEL_FRAMEWORK_PY_TORCH`), in handle form."""
        text = str(value or "").upper().removeprefix("MODEL_FRAMEWORK_")
        return text.replace("_", "").lower()

    def _model_record(self, owner: str, slug: str) -> ModelRecord:
        record = self.models.get(f"{owner}/{slug}")
        if record is None:
            raise _Fail(404, f"Model {owner}/{slug} not found")
        return record

    def _model_instance(self, body: dict[str, Any]) -> ModelInstance:
        record = self._model_record(
            str(body.get("ownerSlug") or ""), str(body.get("modelSlug") or "")
        )
        key = (self._framework(body.get("framework")), str(body.get("instanceSlug") or ""))
        instance = record.instances.get(key)
        if instance is None:
            raise _Fail(
                404, f"Model instance {record.owner}/{record.slug}/{key[0]}/{key[1]} not found"
            )
        return instance

    def _model_available(self, source: str) -> bool:
        try:
            self.model_dir(source)
        except (KeyError, ValueError):
            return False
        return True

    def _add_model_version(
        self, record: ModelRecord, instance: ModelInstance, blobs: list[Blob]
    ) -> None:
        number = len(instance.versions) + 1
        folder = (
            self.root
            / "models"
            / record.owner
            / record.slug
            / instance.framework
            / instance.slug
            / str(number)
        )
        folder.mkdir(parents=True, exist_ok=True)
        for blob in blobs:
            assert blob.data is not None
            (folder / blob.name).write_bytes(blob.data)
        handle = f"{record.owner}/{record.slug}/{instance.framework}/{instance.slug}"
        script = self._model_scripts.get(handle, ModelScript())
        instance.versions.append(ModelVersion(number, folder, script))

    def _rpc_GetModel(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record = self._model_record(
                str(body.get("ownerSlug") or ""), str(body.get("modelSlug") or "")
            )
            ref = f"{record.owner}/{record.slug}"
            return {
                "ref": ref,
                "title": record.title,
                "slug": record.slug,
                "isPrivate": record.is_private,
                "url": f"{self.web_url}/models/{ref}",
            }

    def _rpc_CreateModel(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        owner, slug, title = (
            str(body.get("ownerSlug") or ""),
            str(body.get("slug") or ""),
            str(body.get("title") or ""),
        )
        if owner != user:
            raise _Fail(403, f"Permission denied: {user} cannot create models for {owner}")
        if not slug or not 5 <= len(title) <= 50:
            raise _Fail(400, "a model needs a slug and a title of 5 to 50 characters")
        ref = f"{owner}/{slug}"
        with self._lock:
            if ref in self.models:
                return {"error": f"Model {ref} already exists"}
            self.models[ref] = ModelRecord(owner, slug, title, bool(body.get("isPrivate")))
        return {"ref": ref, "url": f"{self.web_url}/models/{ref}"}

    def _rpc_GetModelInstance(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            instance = self._model_instance(body)
            for version in instance.versions:
                version.polls += 1
            ready = [v.number for v in instance.versions if v.ready]
            answer: dict[str, Any] = {
                "slug": instance.slug,
                "framework": body.get("framework"),
                "licenseName": instance.license_name,
            }
            if ready:
                answer["versionNumber"] = max(ready)
            return answer

    def _rpc_CreateModelInstance(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        inner = body.get("body") or {}
        with self._lock:
            record = self._model_record(
                str(body.get("ownerSlug") or ""), str(body.get("modelSlug") or "")
            )
            if record.owner != user:
                raise _Fail(
                    403,
                    f"Permission denied: {user} cannot add instances to {record.owner}/{record.slug}",
                )
            key = (self._framework(inner.get("framework")), str(inner.get("instanceSlug") or ""))
            if not key[0] or not key[1]:
                raise _Fail(400, "a model instance needs a framework and an instance slug")
            if not inner.get("licenseName"):
                raise _Fail(400, "a model instance needs a license")
            if key in record.instances:
                return {"error": f"Instance {key[1]} already exists"}
            blobs = self._take_files(list(inner.get("files") or []))
            instance = ModelInstance(key[0], key[1], str(inner["licenseName"]))
            record.instances[key] = instance
            self._add_model_version(record, instance, blobs)
        ref = f"{record.owner}/{record.slug}/{key[0]}/{key[1]}"
        return {"ref": ref, "url": f"{self.web_url}/models/{ref}"}

    def _rpc_CreateModelInstanceVersion(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        inner = body.get("body") or {}
        with self._lock:
            record = self._model_record(
                str(body.get("ownerSlug") or ""), str(body.get("modelSlug") or "")
            )
            if record.owner != user:
                raise _Fail(
                    403, f"Permission denied: {user} cannot version {record.owner}/{record.slug}"
                )
            instance = self._model_instance(body)
            blobs = self._take_files(list(inner.get("files") or []))
            self._add_model_version(record, instance, blobs)
        ref = f"{record.owner}/{record.slug}/{instance.framework}/{instance.slug}"
        return {"ref": ref, "url": f"{self.web_url}/models/{ref}"}

    def _rpc_GetAcceleratorQuotaStatistics(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        figures = self.gpu_quota

        def seconds(hours: float) -> str:
            return f"{round(hours * 3600)}s"

        return {
            "quotaRefreshTime": figures.refreshes.isoformat(timespec="milliseconds") + "Z",
            "gpuQuota": {
                "timeUsed": seconds(figures.used),
                "timeReserved": seconds(figures.reserved),
                "totalTimeAllowed": seconds(figures.allowed),
                "minimumTimeAllowed": seconds(figures.allowed),
            },
        }

    def _rpc_IntrospectToken(self, user: str | None, body: dict[str, Any]) -> dict[str, Any]:
        username = self.tokens.get(str(body.get("token") or ""))
        return {"active": True, "username": username} if username else {}


def _kaggle_log(text: str) -> str:
    """Plain text as Kaggle serves a log: a JSON list of stream records."""
    records = [
        {"stream_name": "stdout", "time": round(0.1 * i, 1), "data": line}
        for i, line in enumerate(text.splitlines(keepends=True))
    ]
    return json.dumps(records)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request (plain or proxy form), lets the stand-in answer, writes or drops."""

    standin: KaggleStandIn

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self, verb: str) -> None:
        body = self._body()
        reply = self.standin.handle(verb, self.path, dict(self.headers.items()), body)
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(reply.declared_length or len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        if reply.declared_length is not None:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_CONNECT(self) -> None:
        self._serve("CONNECT")


# -- pointing the client here ------------------------------------------------------------


def use_standin(
    monkeypatch: pytest.MonkeyPatch,
    standin: KaggleStandIn,
    *,
    username: str | None = "alice",
    key: str | None = None,
    token: str | None = None,
) -> None:
    """Point the official client at ``standin`` for the rest of the test.

    Sets ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` and the proxy variables (clearing
    ``NO_PROXY``), and the fake credentials given. The client reads
    ``KAGGLE_API_ENVIRONMENT`` and the config folder once, when it is first
    imported; if that import happened under another environment, the two class
    attributes holding them are set to what this environment would have given.
    """
    for name, value in standin.client_env().items():
        monkeypatch.setenv(name, value)
    for name in ("NO_PROXY", "no_proxy", "REQUEST_METHOD", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    if username is not None and key is not None:
        monkeypatch.setenv("KAGGLE_USERNAME", username)
        monkeypatch.setenv("KAGGLE_KEY", key)
    if token is not None:
        monkeypatch.setenv("KAGGLE_API_TOKEN", token)

    from kernelgen.backends.kaggle import _client_class

    api_class = _client_class()
    config_dir = Path(os.environ["HOME"]) / ".kaggle"
    monkeypatch.setattr(api_class, "config_dir", str(config_dir))
    monkeypatch.setattr(api_class, "config", str(config_dir / "kaggle.json"))
    if "--local" not in api_class.args:
        monkeypatch.setattr(api_class, "args", [*api_class.args, "--local"])
