"""The Kaggle backend: the official client, imported lazily, behind bounded retries.

This is the only module that imports ``kaggle`` (and its ``kagglesdk``). Importing
the ``kaggle`` package runs an authentication at import time, so the import
happens inside a method, the first time a call needs it.

The client does not retry pushes, status or output calls, and where it does
retry (blob uploads, dataset creation) it sleeps on the real clock. Every call
here therefore goes through one retry policy of ours, with an injected sleep
and clock, and the client's own retry wrapper is reduced to a single attempt.

Two calls are not idempotent: a push and a dataset version. When a connection
drops after the request went out, the server may have done the work, and
trying again would create a second version. Before such a retry the backend
asks Kaggle for the current version number and, if it moved, takes the work
as done.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
from kernelgen.backends.retry import FATAL, RetryExhausted, RetryPolicy, Verdict, call_with_retry
from kernelgen.errors import AuthError, BackendError, KernelgenError, UnreachableError

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi

T = TypeVar("T")

_log = logging.getLogger(__name__)

KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
MODEL_METADATA = "model-metadata.json"
MODEL_INSTANCE_METADATA = "model-instance-metadata.json"
WEB = "https://www.kaggle.com"
DIR_MODE = "zip"
"""How the official client uploads a folder inside a dataset or model (a matrix stage's
one folder per cell): as a zip archive of it. Its default skips folders."""

NO_CREDENTIALS = (
    "no Kaggle credentials found: save an API token from https://www.kaggle.com/settings/api "
    "to ~/.kaggle/access_token (or set KAGGLE_API_TOKEN), or put kaggle.json "
    '({"username": ..., "key": ...}) in ~/.kaggle/ (or set KAGGLE_USERNAME and KAGGLE_KEY)'
)

_KERNEL_STATUS = {
    "QUEUED": RunStatus.QUEUED,
    "NEW_SCRIPT": RunStatus.QUEUED,
    "RUNNING": RunStatus.RUNNING,
    "COMPLETE": RunStatus.COMPLETE,
    "ERROR": RunStatus.ERROR,
    "CANCEL_REQUESTED": RunStatus.CANCELLED,
    "CANCEL_ACKNOWLEDGED": RunStatus.CANCELLED,
}
_DATASET_FAILED = {"failed", "deleted"}

_IMPORT_LOCK = threading.Lock()

FIRST_CONTACT_SECONDS = 10.0
"""Until a call has reached Kaggle once, how long a failing connection is retried before
the cause is named: a command without a network says so within seconds."""


def _to_stderr(line: str) -> None:
    print(f"kernelgen: {line}", file=sys.stderr, flush=True)


def _client_class() -> type[KaggleApi]:
    """Import the client quietly: the package authenticates and prints help on import."""
    with _IMPORT_LOCK, contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

    return KaggleApi


def default_api_factory() -> KaggleApi:
    """An authenticated client, credentials found the client's own way.

    The client looks, in order, for an access token (``KAGGLE_API_TOKEN``,
    ``~/.kaggle/access_token``), a legacy key (``KAGGLE_USERNAME`` and
    ``KAGGLE_KEY``, or ``kaggle.json``) and OAuth credentials from
    ``kaggle auth login``; without any it prints help and calls ``exit``.
    """
    api = _client_class()()
    try:
        with _IMPORT_LOCK, contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise AuthError(NO_CREDENTIALS) from None
    except Exception as exc:
        status = _http_status(exc)
        if status in (401, 403):
            raise AuthError(
                f"Kaggle refused the access token (HTTP {status}); {NO_CREDENTIALS}"
            ) from None
        if _is_connection_error(exc):
            raise UnreachableError(f"could not reach Kaggle to check the access token: {unreachable_cause(exc)}") from None
        raise
    return api


def _single_attempt(func: Callable[..., T], *_args: Any, **_kwargs: Any) -> Callable[..., T]:
    """Stands in for the client's ``with_retry``, whose sleeps bypass the injected clock."""
    return func


class KaggleBackend:
    """Push, follow, collect, publish and submit through the official ``kaggle`` client."""

    name = "kaggle"
    draws_quota = True

    def __init__(
        self,
        *,
        api_factory: Callable[[], KaggleApi] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        retry: RetryPolicy | None = None,
        first_contact: float = FIRST_CONTACT_SECONDS,
        output_page_size: int = 20,
        version_notes: str = "Published by kernelgen",
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self._api_factory = api_factory or default_api_factory
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._retry = retry or RetryPolicy()
        self._first_contact = first_contact
        self._reached = False
        self._notify = notify or _to_stderr
        self._page_size = output_page_size
        self._version_notes = version_notes
        self._api: KaggleApi | None = None
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    # -- the client ---------------------------------------------------------------------

    def _client(self) -> KaggleApi:
        with self._lock:
            if self._api is None:
                api = self._api_factory()
                api.with_retry = _single_attempt  # type: ignore[method-assign]
                self._secrets = _secrets_of(api)
                self._api = api
            return self._api

    @property
    def username(self) -> str:
        """The account the credentials belong to (owner of pushed kernels and datasets)."""
        return str(self._client().config_values.get("username") or "")

    def close(self) -> None:
        """Nothing to let go of: the client opens a connection per call."""

    def _call(
        self,
        what: str,
        op: Callable[[], T],
        *,
        idempotent: bool = True,
        recover: Callable[[], T | None] | None = None,
    ) -> T:
        """Run one client operation under the retry policy; failures become BackendError.

        Until one call has reached Kaggle, a name that does not resolve or a proxy that
        cannot be used fails at once, and other connection failures are retried for
        `first_contact` seconds only: a command without a network says so within seconds.
        """
        classify = _classify if self._reached else functools.partial(_classify_first, within=self._first_contact)
        try:
            result = call_with_retry(
                op,
                classify=classify,
                policy=self._retry,
                sleep=self._sleep,
                clock=self._clock,
                rng=self._rng,
                describe=what,
                idempotent=idempotent,
                recover=recover,
                on_retry=lambda retrying: self._notify(self._redact(retrying.describe())),
            )
        except KernelgenError:
            raise
        except RetryExhausted as exc:
            raise self._error(
                what, exc.last, suffix=f" (gave up after {exc.attempts} attempts)"
            ) from None
        except Exception as exc:
            if _http_status(exc) is not None:
                self._reached = True
            if _is_expected(exc):
                raise self._error(what, exc) from None
            raise
        self._reached = True
        return result

    def _error(self, what: str, exc: BaseException, *, suffix: str = "") -> BackendError:
        status = _http_status(exc)
        detail = self._redact(_short(exc))
        if status == 401:
            return AuthError(
                f"{what}: Kaggle refused the credentials (HTTP 401){suffix}; check the API "
                "token or kaggle.json in ~/.kaggle/"
            )
        if status == 403:
            return AuthError(f"{what}: Kaggle denied access (HTTP 403): {detail}{suffix}")
        if status is not None:
            return BackendError(f"{what}: HTTP {status}: {detail}{suffix}")
        if _is_connection_error(exc):
            return UnreachableError(f"{what}: {unreachable_cause(exc)}{suffix}")
        return BackendError(f"{what}: {detail}{suffix}")

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- kernels ------------------------------------------------------------------------

    def push(self, folder: Path) -> PushResult:
        """Push the kernel in ``folder``; Kaggle starts a new version running.

        The client reads the machine shape and image pinning from kernel-metadata.json
        but the session time limit only from its ``timeout`` argument, so
        ``session_timeout_seconds`` in the metadata is handed over that way.
        """
        folder = Path(folder)
        meta = _read_metadata(folder / KERNEL_METADATA)
        ref = _ref(meta, folder / KERNEL_METADATA)
        owner, slug = ref.split("/")
        timeout = meta.get("session_timeout_seconds")
        api = self._client()
        what = f"push {ref}"
        before = self._kernel_version(owner, slug)

        def push_once() -> PushResult:
            response = api.kernels_push(str(folder), timeout=str(timeout) if timeout else None)
            return self._push_result(what, ref, response)

        def landed() -> PushResult | None:
            now = self._kernel_version(owner, slug)
            if now is not None and (before is None or now > before):
                _log.info("%s: version %d was saved before the connection failed", what, now)
                return PushResult(kernel=ref, version=now, url=f"{WEB}/code/{ref}")
            return None

        return self._call(what, push_once, idempotent=False, recover=landed)

    def _push_result(self, what: str, ref: str, response: Any) -> PushResult:
        if response is None:
            raise BackendError(f"{what}: the client returned no response")
        if response.error:
            raise BackendError(f"{what}: Kaggle refused the push: {self._redact(response.error)}")
        kernel = _ref_from_response(response.ref) or ref
        version = response.version_number
        rejected = [
            *response.invalid_dataset_sources,
            *response.invalid_competition_sources,
            *response.invalid_kernel_sources,
            *response.invalid_model_sources,
        ]
        if rejected:
            raise BackendError(
                f"{what}: version {version} was saved but Kaggle rejected its sources "
                f"{', '.join(rejected)}; publish them or fix kernel-metadata, then push again"
            )
        url = response.url or f"{WEB}/code/{kernel}"
        return PushResult(kernel=kernel, version=version, url=url)

    def latest_version(self, kernel: str) -> int | None:
        owner, slug = kernel.split("/")[:2]
        return self._kernel_version(owner, slug)

    def _kernel_version(self, owner: str, slug: str) -> int | None:
        """The kernel's current version number, or None if it does not exist yet."""
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

        api = self._client()

        def lookup() -> int | None:
            request = ApiGetKernelRequest()
            request.user_name = owner
            request.kernel_slug = slug
            with api.build_kaggle_client() as client:
                response = _unless_absent(lambda: client.kernels.kernels_api_client.get_kernel(request))
            metadata = None if response is None else response.metadata
            return metadata.current_version_number if metadata is not None else None

        return self._call(f"look up kernel {owner}/{slug}", lookup)

    def status(self, kernel: str) -> KernelState:
        """State of the latest run of ``owner/slug``, or of version N with ``owner/slug/N``."""
        api = self._client()
        response = self._call(f"status of {kernel}", lambda: api.kernels_status(kernel))
        name = getattr(response.status, "name", str(response.status or "QUEUED")).upper()
        status = _KERNEL_STATUS.get(name, RunStatus.RUNNING)
        message = self._redact(response.failure_message or "")
        return KernelState(status=status, message=message)

    def output(self, kernel: str, dest: Path) -> KernelOutput:
        """Download every output file (all pages) into ``dest`` and the log to ``<slug>.log``.

        The log is stored as plain text: Kaggle returns it as a JSON list of
        stream records, which is hard to read and to tail.
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        slug = kernel.split("/")[1] if "/" in kernel else kernel
        api = self._client()
        files: list[Path] = []
        token = ""
        seen: set[str] = set()
        while True:
            page_files, next_token = self._call(
                f"outputs of {kernel}",
                lambda token=token: api.kernels_output(
                    kernel,
                    str(dest),
                    force=True,
                    quiet=True,
                    page_token=token,
                    page_size=self._page_size,
                ),
            )
            files.extend(Path(name) for name in page_files)
            if not next_token or next_token in seen:
                break
            seen.add(next_token)
            token = next_token
        raw_log = self._call(f"log of {kernel}", lambda: api.kernels_logs(kernel))
        log = self._redact(log_text(raw_log or ""))
        (dest / f"{slug}.log").write_text(log, encoding="utf-8")
        return KernelOutput(files=files, log=log)

    def log_stream(self, kernel: str) -> Iterator[str]:
        """The live log of ``owner/slug/N`` (server-sent events while it runs, the saved
        log after); not retried: whoever follows it reconnects."""
        api = self._client()
        for event in api.kernels_logs_stream(kernel):
            data = event.get("data") if isinstance(event, dict) else None
            if isinstance(data, str):
                yield self._redact(data)

    # -- datasets -----------------------------------------------------------------------

    def publish(self, folder: Path) -> PublishResult:
        """Create the dataset in ``folder``, or add a version if it exists.

        Only top-level files are uploaded. A new version is refused while the
        previous one is still processing; wait for it to be ready first.
        """
        folder = Path(folder)
        meta = _read_metadata(folder / DATASET_METADATA)
        ref = _ref(meta, folder / DATASET_METADATA)
        api = self._client()
        before = self._dataset_info(ref)
        if before is None:
            what = f"create dataset {ref}"

            def publish_once() -> PublishResult:
                response = api.dataset_create_new(str(folder), public=False, quiet=True, dir_mode=DIR_MODE)
                return self._publish_result(what, ref, response, created=True)

        else:
            what = f"new version of dataset {ref}"
            status = before.get("status", "")
            if status != "ready" and status not in _DATASET_FAILED:
                raise BackendError(
                    f"{what}: the previous version is still processing ({status}); "
                    "wait until it is ready before publishing again"
                )

            def publish_once() -> PublishResult:
                response = api.dataset_create_version(str(folder), self._version_notes, quiet=True, dir_mode=DIR_MODE)
                return self._publish_result(what, ref, response, created=False)

        def landed() -> PublishResult | None:
            now = self._dataset_info(ref)
            if now is None:
                return None
            if before is None:
                return PublishResult(dataset=ref, created=True, url=f"{WEB}/datasets/{ref}")
            old, new = before.get("current_version_number"), now.get("current_version_number")
            if isinstance(old, int) and isinstance(new, int) and new > old:
                return PublishResult(dataset=ref, created=False, url=f"{WEB}/datasets/{ref}")
            return None

        return self._call(what, publish_once, idempotent=False, recover=landed)

    def _publish_result(
        self, what: str, ref: str, response: Any, *, created: bool
    ) -> PublishResult:
        if response is None:
            raise BackendError(f"{what}: the client returned no response")
        if response.error:
            raise BackendError(f"{what}: Kaggle refused it: {self._redact(response.error)}")
        return PublishResult(
            dataset=ref, created=created, url=response.url or f"{WEB}/datasets/{ref}"
        )

    def _dataset_info(self, ref: str) -> dict[str, Any] | None:
        """Status and current version of a dataset, or None when it does not exist."""
        api = self._client()

        def lookup() -> dict[str, Any] | None:
            raw = _unless_absent(lambda: api.dataset_status(ref, format="json(status,current_version_number)"))
            if raw is None:
                return None
            info = json.loads(raw)
            return info if isinstance(info, dict) else None

        return self._call(f"look up dataset {ref}", lookup)

    def dataset_version(self, dataset: str) -> int | None:
        info = self._dataset_info("/".join(dataset.split("/")[:2]))
        version = None if info is None else info.get("current_version_number")
        return version if isinstance(version, int) else None

    def dataset_status(self, dataset: str) -> DatasetStatus:
        """Processing state of the latest version of ``owner/slug``."""
        api = self._client()
        raw = self._call(f"status of dataset {dataset}", lambda: api.dataset_status(dataset))
        text = str(raw or "").lower()
        if text == "ready":
            return DatasetStatus.READY
        if text in _DATASET_FAILED:
            return DatasetStatus.ERROR
        return DatasetStatus.PROCESSING

    # -- competitions -------------------------------------------------------------------

    def submit(
        self, competition: str, kernel: str, version: int, file_name: str, message: str
    ) -> Submitted:
        """Submit ``file_name`` from version ``version`` of ``kernel`` to a code competition.

        A submission is not retried after a failure that may have reached the
        server: a second one would count against the daily limit.
        """
        owner_slug = "/".join(kernel.split("/")[:2])
        api = self._client()
        what = f"submit {owner_slug} version {version} to {competition}"
        response = self._call(
            what,
            lambda: api.competition_submit_code(
                file_name, message, competition, owner_slug, version, quiet=True
            ),
            idempotent=False,
        )
        ref = getattr(response, "ref", None)
        text = self._redact(response.message or f"submitted {owner_slug} version {version}")
        return Submitted(int(ref) if ref else None, text)

    def submission(self, competition: str, ref: int) -> SubmissionState:
        """Where submission ``ref`` stands (Kaggle scores it a while after it is made)."""
        api = self._client()
        found = self._call(f"submission {ref} to {competition}", lambda: api.get_submission(ref))
        return self._submission_state(found)

    def submissions(self, competition: str) -> list[SubmissionState]:
        """The account's submissions to ``competition``, newest first (the first page)."""
        api = self._client()
        found = self._call(
            f"submissions to {competition}", lambda: api.competition_submissions(competition)
        )
        return [self._submission_state(item) for item in found or [] if item is not None]

    def _submission_state(self, item: Any) -> SubmissionState:
        name = getattr(item.status, "name", str(item.status or "PENDING")).upper()
        status = {"COMPLETE": SubmissionStatus.COMPLETE, "ERROR": SubmissionStatus.ERROR}.get(
            name, SubmissionStatus.PENDING
        )
        date = item.date.isoformat(timespec="seconds") if getattr(item, "date", None) else ""
        return SubmissionState(
            ref=item.ref or None,
            status=status,
            public_score=_score(item.public_score),
            private_score=_score(item.private_score),
            message=self._redact(item.error_description or ""),
            date=date,
            description=self._redact(item.description or ""),
            file_name=item.file_name or "",
        )

    # -- models -------------------------------------------------------------------------

    def model_version(self, instance: str) -> int | None:
        """The newest available version of ``owner/model/framework/variation``; None
        while the instance does not exist or has no version available."""
        found = self._model_instance(instance)
        return None if found is None else found.version_number or None

    def _model_instance(self, instance: str) -> Any:
        """The instance as Kaggle describes it, None when it does not exist."""
        api = self._client()
        return self._call(f"look up model {instance}", lambda: _unless_absent(lambda: api.model_instance_get(instance)))

    def _model_exists(self, model: str) -> bool:
        api = self._client()
        return self._call(f"look up model {model}", lambda: _unless_absent(lambda: api.model_get(model))) is not None

    def publish_model(self, folder: Path) -> PublishResult:
        """Add a version to the model instance in ``folder``: the model is made (private)
        when it does not exist, and the instance, whose files are its first version, when
        it does not. Kaggle then processes the version before kernels can mount it."""
        folder = Path(folder)
        model = _read_metadata(folder / MODEL_METADATA)
        instance_meta = _read_metadata(folder / MODEL_INSTANCE_METADATA)
        ref = f"{model.get('ownerSlug')}/{model.get('slug')}"
        instance = f"{ref}/{instance_meta.get('framework')}/{instance_meta.get('instanceSlug')}"
        api = self._client()
        if not self._model_exists(ref):
            response = self._call(
                f"create model {ref}", lambda: api.model_create_new(str(folder)), idempotent=False
            )
            if response.error:
                raise BackendError(
                    f"create model {ref}: Kaggle refused it: {self._redact(response.error)}"
                )
        before = self.model_version(instance)
        if before is None and self._model_instance(instance) is None:
            what = f"create model instance {instance}"

            def publish_once() -> Any:
                return api.model_instance_create(str(folder), quiet=True, dir_mode=DIR_MODE)

        else:
            what = f"new version of model {instance}"

            def publish_once() -> Any:
                return api.model_instance_version_create(
                    instance, str(folder), self._version_notes, quiet=True, dir_mode=DIR_MODE
                )

        def landed() -> Any:
            now = self.model_version(instance)
            return now if now is not None and (before is None or now > before) else None

        response = self._call(what, publish_once, idempotent=False, recover=landed)
        if getattr(response, "error", ""):
            raise BackendError(f"{what}: Kaggle refused it: {self._redact(response.error)}")
        return PublishResult(
            dataset=instance, created=before is None, url=f"{WEB}/models/{instance}"
        )


    # -- quota --------------------------------------------------------------------------

    def quota(self) -> GpuQuota | None:
        """The week's GPU quota as Kaggle reports it, or None when it reports none."""
        api = self._client()
        response = self._call("GPU quota", api.quota_view)
        gpu = response.gpu_quota
        if gpu is None:
            return None
        refreshes = response.quota_refresh_time
        if refreshes is not None and refreshes.tzinfo is None:  # the SDK drops the zone of a UTC time
            refreshes = refreshes.replace(tzinfo=timezone.utc)
        return GpuQuota(
            used=_hours(gpu.time_used),
            reserved=_hours(gpu.time_reserved),
            allowed=_hours(gpu.total_time_allowed),
            refreshes=refreshes,
        )


# -- helpers ------------------------------------------------------------------------------


def _score(text: str | None) -> float | None:
    """A score as Kaggle sends it (text, empty until scored)."""
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _hours(duration: timedelta | None) -> float:
    return duration.total_seconds() / 3600 if duration is not None else 0.0


def log_text(raw: str) -> str:
    """Kaggle's log (a JSON list of ``{"stream_name", "time", "data"}``) as plain text."""
    try:
        records = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        return raw
    return "".join(str(record.get("data", "")) for record in records)


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(f"{path}: not found") from None
    except (OSError, ValueError) as exc:
        raise BackendError(f"{path}: cannot read it: {exc}") from None
    if not isinstance(data, dict):
        raise BackendError(f"{path}: expected a JSON object")
    return data


def _ref(meta: dict[str, Any], path: Path) -> str:
    ref = meta.get("id")
    if not isinstance(ref, str) or ref.count("/") != 1 or not all(ref.split("/")):
        raise BackendError(f'{path}: "id" must be "owner/slug", got {ref!r}')
    return ref


def _ref_from_response(ref: str | None) -> str | None:
    """``owner/slug`` from a response's ref, which may be a path such as ``/code/owner/slug``."""
    parts = [part for part in (ref or "").split("/") if part]
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def _secrets_of(api: KaggleApi) -> tuple[str, ...]:
    values = getattr(api, "config_values", {}) or {}
    secrets = [str(values[k]) for k in ("key", "token") if values.get(k)]
    user, key = values.get("username"), values.get("key")
    if user and key:
        secrets.append(base64.b64encode(f"{user}:{key}".encode()).decode())
    return tuple(s for s in secrets if len(s) >= 4)


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _response(exc: BaseException) -> Any:
    for item in _exception_chain(exc):
        response = getattr(item, "response", None)
        if isinstance(getattr(response, "status_code", None), int):
            return response
    return None


def _unless_absent(fetch: Callable[[], T]) -> T | None:
    """What `fetch` returns, None when Kaggle answers that it does not exist (404, or 403,
    which Kaggle also answers for another account's private or unknown items)."""
    try:
        return fetch()
    except Exception as exc:
        if _http_status(exc) in (403, 404):
            return None
        raise


def _http_status(exc: BaseException) -> int | None:
    response = _response(exc)
    return None if response is None else int(response.status_code)


def _retry_after(exc: BaseException) -> float | None:
    response = _response(exc)
    value = None if response is None else response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _connection_error_types() -> tuple[type[BaseException], ...]:
    import http.client

    import requests
    import urllib3.exceptions

    return (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.TimeoutError,
        http.client.RemoteDisconnected,
        ConnectionError,
    )


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, _connection_error_types())


def _never_connected(exc: BaseException) -> bool:
    """True when the request cannot have reached the server (so repeating it is harmless)."""
    import requests
    import urllib3.exceptions

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    # requests wraps urllib3's MaxRetryError, whose reason may wrap the refusal once more
    # (a ProxyError carrying the NewConnectionError as original_error).
    cause: object = exc.args[0] if exc.args else None
    for _ in range(3):
        if isinstance(
            cause, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
        ):
            return True
        cause = getattr(cause, "reason", None) or getattr(cause, "original_error", None)
    return False


def _classify(exc: BaseException) -> Verdict:
    status = _http_status(exc)
    if status == 429:
        return Verdict(retry=True, after=_retry_after(exc), safe=True, reason="HTTP 429")
    if status is not None and 500 <= status < 600:
        return Verdict(retry=True, reason=f"HTTP {status}")
    if status is not None:
        return FATAL
    if _is_connection_error(exc):
        return Verdict(retry=True, safe=_never_connected(exc), reason=unreachable_cause(exc))
    return FATAL


def _classify_first(exc: BaseException, *, within: float) -> Verdict:
    """Before any call has reached Kaggle: a name that does not resolve or a proxy that
    cannot be used will not mend itself in seconds, so it is final; another connection
    failure is retried for `within` seconds."""
    verdict = _classify(exc)
    if _http_status(exc) is not None or not _is_connection_error(exc):
        return verdict
    if _dns_failure(exc) or _proxy_failure(exc):
        return FATAL
    return replace(verdict, within=within)


def _dns_failure(exc: BaseException) -> bool:
    import socket

    import urllib3.exceptions

    return any(
        isinstance(item, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for item in _causes(exc)
    )


def _proxy_failure(exc: BaseException) -> bool:
    import requests
    import urllib3.exceptions

    return any(
        isinstance(item, (requests.exceptions.ProxyError, urllib3.exceptions.ProxyError)) for item in _causes(exc)
    )


def _dropped(exc: BaseException) -> bool:
    """The connection was made and then cut before an answer came."""
    import http.client

    import urllib3.exceptions

    cut = (http.client.RemoteDisconnected, ConnectionResetError, urllib3.exceptions.ProtocolError)
    return any(isinstance(item, cut) for item in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it was raised from, and what requests and urllib3 wrapped in it."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None), getattr(item, "original_error", None)])
        stack.extend(item.args)


def unreachable_cause(exc: BaseException) -> str:
    """Why Kaggle could not be reached, in words: DNS, a proxy, or the connection itself."""
    import os

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy")
    if _dropped(exc):
        through = f" (through the proxy {proxy})" if proxy else ""
        return f"the connection to Kaggle was dropped before an answer{through}"
    if _proxy_failure(exc):
        what = "does not resolve (DNS)" if _dns_failure(exc) else "cannot be reached"
        return f"the proxy {proxy or '(from the environment)'} {what}; check HTTPS_PROXY / HTTP_PROXY"
    if _dns_failure(exc):
        return "the Kaggle API's host name does not resolve (DNS): no network, or no name server reachable"
    if _never_connected(exc):
        return "the connection to Kaggle was refused or timed out: no network, or Kaggle is unreachable"
    return f"the connection to Kaggle failed: {_short(exc, 160)}"


def _is_expected(exc: BaseException) -> bool:
    """Failures of the remote service or of the client's own validation, not bugs here."""
    import requests

    return isinstance(exc, (requests.exceptions.RequestException, ValueError, OSError)) or (
        _is_connection_error(exc)
    )


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
