"""KaggleBackend through the unmodified official client, against the local stand-in."""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kernelgen.backends.base import DatasetStatus, RunStatus
from kernelgen.backends.kaggle import KaggleBackend, log_text
from kernelgen.backends.retry import RetryPolicy
from kernelgen.backoff import DATASET_BACKOFF, Backoff, poll_until
from kernelgen.errors import AuthError, BackendError, PollTimeoutError
from tests.fakes import FakeClock
from tests.kaggle_standin import (
    DatasetScript,
    ExecutedKernel,
    Fault,
    KaggleStandIn,
    KernelScript,
    PushedKernel,
    use_standin,
)

USER = "alice"
KEY = "planted-Key-7f3a9c1e5b2d"
KERNEL = f"{USER}/stage-one-kernel"
DATASET = f"{USER}/stage1-outputs"


def many_files_executor(pushed: PushedKernel) -> ExecutedKernel:
    """Five top-level outputs and one nested, so listing them takes several pages."""
    out = pushed.scratch_dir / "out"
    (out / "plots").mkdir(parents=True)
    for i in range(5):
        (out / f"part{i}.csv").write_text(f"id,value\n{i},{i * i}\n")
    (out / "plots" / "curve.png").write_bytes(b"\x89PNG fake")
    (out / "submission.csv").write_text("ImageId_ClassId,EncodedPixels\n")
    return ExecutedKernel(RunStatus.COMPLETE, out, log="epoch 1\nepoch 2\nfinished\n")


@pytest.fixture
def fake_time() -> FakeClock:
    return FakeClock()


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleStandIn]:
    with KaggleStandIn(
        tmp_path / "kaggle-server",
        credentials={USER: KEY},
        output_page_size=2,
        executor=many_files_executor,
    ) as server:
        use_standin(monkeypatch, server, username=USER, key=KEY)
        yield server
        assert server.count("CONNECT") == 0, "a request tried to leave for the real Kaggle"


@pytest.fixture
def backend(fake_time: FakeClock) -> KaggleBackend:
    return KaggleBackend(
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        rng=lambda: 0.0,
        retry=RetryPolicy(max_attempts=4, backoff=Backoff(1.0, 2.0, 8.0), max_elapsed=100.0),
    )


def make_kernel(folder: Path, ref: str = KERNEL, *, datasets: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": ["x = 1\n", "print(x)"],
                "metadata": {},
                "outputs": [],
                "execution_count": None,
            },
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (folder / "kernel.ipynb").write_text(json.dumps(notebook))
    meta = {
        "id": ref,
        "title": ref.split("/")[1].replace("-", " ").title(),
        "code_file": "kernel.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": False,
        "dataset_sources": list(datasets),
        "competition_sources": ["severstal-steel-defect-detection"],
        "kernel_sources": [],
    }
    (folder / "kernel-metadata.json").write_text(json.dumps(meta))
    return folder


def make_dataset(folder: Path, ref: str = DATASET, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"title": "Stage1 outputs", "id": ref, "licenses": [{"name": "CC0-1.0"}]}
    (folder / "dataset-metadata.json").write_text(json.dumps(meta))
    for name, text in (files or {"test_missing_count.csv": "ImageId,count\na.jpg,0\n"}).items():
        (folder / name).write_text(text)
    return folder


def complete_kernel(backend: KaggleBackend, tmp_path: Path) -> None:
    backend.push(make_kernel(tmp_path / "kernel"))
    while not backend.status(KERNEL).status.finished:
        pass


# -- the happy path ----------------------------------------------------------------------


def test_push_status_output_through_the_official_client(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    pushed = backend.push(make_kernel(tmp_path / "kernel"))
    assert (pushed.kernel, pushed.version) == (KERNEL, 1)
    assert pushed.url.endswith(f"/code/{KERNEL}")

    received = standin.kernel_versions(KERNEL)[0].pushed
    assert received.enable_gpu and not received.enable_internet
    assert received.competition_sources == ("severstal-steel-defect-detection",)
    assert received.notebook()["cells"][0]["source"] == "x = 1\nprint(x)"

    assert backend.status(KERNEL).status is RunStatus.RUNNING
    assert backend.status(KERNEL).status is RunStatus.COMPLETE

    dest = tmp_path / "outputs"
    result = backend.output(KERNEL, dest)
    names = sorted(p.relative_to(dest).as_posix() for p in result.files)
    assert names == [*(f"part{i}.csv" for i in range(5)), "plots/curve.png", "submission.csv"]
    assert (dest / "part3.csv").read_text() == "id,value\n3,9\n"
    assert (dest / "plots" / "curve.png").read_bytes() == b"\x89PNG fake"
    assert result.log == "epoch 1\nepoch 2\nfinished\n"
    assert (dest / "stage-one-kernel.log").read_text() == result.log
    # seven files at two per page: four listing calls, plus one for the log
    assert standin.count("ListKernelSessionOutput") == 5
    assert standin.count("Download") == 7
    assert fake_time.sleeps == []


def test_the_live_log_streams_while_running_and_replays_from_the_start(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    script = KernelScript(running_polls=3, running_log=("epoch 1", f"key {KEY}", "epoch 3"), cut_stream_after=1)
    standin.script_kernel(KERNEL, script)
    backend.push(make_kernel(tmp_path / "kernel"))
    backend.push(make_kernel(tmp_path / "kernel"))
    first = f"{KERNEL}/1"
    assert backend.status(first).status is RunStatus.RUNNING
    assert list(backend.log_stream(first)) == ["epoch 1\n"]
    assert backend.status(first).status is RunStatus.RUNNING
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(backend.log_stream(first))  # the connection is cut mid-response
    assert list(backend.log_stream(first)) == ["epoch 1\n", "key ***\n"]  # replayed from the start, redacted
    assert list(backend.log_stream(f"{KERNEL}/2")) == []  # the other version has printed nothing yet
    while not backend.status(first).status.finished:
        pass
    saved = list(backend.log_stream(first))  # the saved log after the run, as a JSON list
    assert saved == ["epoch 1\n", "key ***\n", "epoch 3\n", "epoch 1\n", "epoch 2\n", "finished\n"]
    labels = [call.body["versionLabel"] for call in standin.calls("LogStream")]
    assert labels == ["v1", "v1", "v1", "v2", "v1"]


def test_versions_count_up_and_can_be_addressed(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    folder = make_kernel(tmp_path / "kernel")
    assert backend.push(folder).version == 1
    assert backend.push(folder).version == 2
    assert backend.status(f"{KERNEL}/1").status is RunStatus.RUNNING
    assert backend.status(f"{KERNEL}/1").status is RunStatus.COMPLETE
    assert backend.status(KERNEL).status is RunStatus.RUNNING  # version 2, polled once
    labels = [r.body.get("versionLabel") for r in standin.calls("GetKernelSessionStatus")]
    assert labels == ["v1", "v1", None]


def test_a_status_left_out_of_the_answer_means_queued(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    standin.script_kernel(KERNEL, KernelScript(queued_polls=2, running_polls=1))
    backend.push(make_kernel(tmp_path / "kernel"))
    seen = [backend.status(KERNEL).status for _ in range(4)]
    assert seen == [RunStatus.QUEUED, RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETE]


def test_a_failing_kernel_reports_error_with_its_message(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    def failing(pushed: PushedKernel) -> ExecutedKernel:
        return ExecutedKernel(
            RunStatus.ERROR,
            None,
            log="Traceback...\nValueError: bad mask\n",
            failure_message="Your notebook hit an error",
        )

    standin.executor = failing
    backend.push(make_kernel(tmp_path / "kernel"))
    backend.status(KERNEL)
    state = backend.status(KERNEL)
    assert state.status is RunStatus.ERROR
    assert state.message == "Your notebook hit an error"
    out = backend.output(KERNEL, tmp_path / "out")
    assert out.files == []
    assert out.log.endswith("ValueError: bad mask\n")


def test_cancelled_runs_map_to_cancelled(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    standin.script_kernel(KERNEL, KernelScript(running_polls=0, cancel=True))
    backend.push(make_kernel(tmp_path / "kernel"))
    assert backend.status(KERNEL).status is RunStatus.CANCELLED


def test_a_kernel_stuck_in_running_times_out(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    standin.script_kernel(KERNEL, KernelScript(stuck=True))
    backend.push(make_kernel(tmp_path / "kernel"))
    with pytest.raises(PollTimeoutError, match=f"kernel {KERNEL}.*1:00:00.*running"):
        poll_until(
            lambda: backend.status(KERNEL),
            lambda state: state.status.finished,
            timeout=3600,
            clock=fake_time.clock,
            sleep=fake_time.sleep,
            what=f"kernel {KERNEL}",
            describe=lambda state: state.status.value,
        )
    polls = standin.count("GetKernelSessionStatus")
    assert 30 < polls < 60
    assert fake_time.now == 3600


def test_publish_creates_then_versions_and_uploads_folders_as_zip_archives(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    folder = make_dataset(tmp_path / "ds")
    (folder / "nested").mkdir()
    (folder / "nested" / "fold.txt").write_text("a cell's file")
    first = backend.publish(folder)
    assert (first.dataset, first.created) == (DATASET, True)
    assert first.url.endswith(f"/datasets/{DATASET}")
    files = sorted(p.name for p in standin.dataset_dir(DATASET).iterdir())
    assert files == ["nested.zip", "test_missing_count.csv"]
    with zipfile.ZipFile(standin.dataset_dir(DATASET) / "nested.zip") as archive:
        assert archive.read("fold.txt") == b"a cell's file"
    assert backend.dataset_status(DATASET) is DatasetStatus.READY

    (folder / "test_missing_count.csv").write_text("ImageId,count\nb.jpg,2\n")
    second = backend.publish(folder)
    assert (second.dataset, second.created) == (DATASET, False)
    assert [v.number for v in standin.dataset_versions(DATASET)] == [1, 2]
    assert standin.dataset_versions(DATASET)[1].notes == "Published by kernelgen"
    assert (
        (standin.dataset_dir(DATASET) / "test_missing_count.csv").read_text().endswith("b.jpg,2\n")
    )
    assert (
        (standin.dataset_dir(DATASET, 1) / "test_missing_count.csv")
        .read_text()
        .endswith("a.jpg,0\n")
    )
    assert standin.count("StartBlobUpload") == 4 and standin.count("Upload") == 4
    assert fake_time.sleeps == []


def test_dataset_processing_then_ready(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    standin.script_dataset(DATASET, DatasetScript(processing_polls=3))
    backend.publish(make_dataset(tmp_path / "ds"))
    status = poll_until(
        lambda: backend.dataset_status(DATASET),
        lambda s: s is not DatasetStatus.PROCESSING,
        timeout=600,
        backoff=DATASET_BACKOFF,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )
    assert status is DatasetStatus.READY
    assert fake_time.sleeps == [5.0, 7.5, 11.25]


def test_a_new_version_waits_for_the_last_to_finish_processing(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    standin.script_dataset(DATASET, DatasetScript(processing_polls=5))
    folder = make_dataset(tmp_path / "ds")
    backend.publish(folder)
    with pytest.raises(BackendError, match="still processing"):
        backend.publish(folder)
    assert len(standin.dataset_versions(DATASET)) == 1


def test_failed_dataset_processing_is_an_error(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    standin.script_dataset(DATASET, DatasetScript(fail=True))
    backend.publish(make_dataset(tmp_path / "ds"))
    assert backend.dataset_status(DATASET) is DatasetStatus.ERROR


def test_pushed_kernels_read_published_datasets(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    seen: list[str] = []

    def reader(pushed: PushedKernel) -> ExecutedKernel:
        folder = pushed.dataset_dir(DATASET)
        seen.append((folder / "test_missing_count.csv").read_text())
        return ExecutedKernel(RunStatus.COMPLETE, None, log="ok\n")

    standin.executor = reader
    backend.publish(make_dataset(tmp_path / "ds"))
    backend.push(make_kernel(tmp_path / "kernel", datasets=(DATASET,)))
    backend.status(KERNEL)
    assert backend.status(KERNEL).status is RunStatus.COMPLETE
    assert seen == ["ImageId,count\na.jpg,0\n"]


def test_a_push_naming_a_missing_dataset_fails_clearly(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    with pytest.raises(
        BackendError, match=f"version 1 was saved .*rejected its sources {USER}/nowhere"
    ):
        backend.push(make_kernel(tmp_path / "kernel", datasets=(f"{USER}/nowhere",)))


def test_submit_a_code_competition_version(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    complete_kernel(backend, tmp_path)
    submitted = backend.submit(
        "severstal-steel-defect-detection", KERNEL, 1, "submission.csv", "v1"
    )
    assert "successfully" in submitted.message
    [submission] = standin.submissions
    assert submitted.ref == submission.ref == 1
    assert (submission.kernel, submission.version, submission.file_name) == (
        KERNEL,
        1,
        "submission.csv",
    )
    assert submission.competition == "severstal-steel-defect-detection"
    assert submission.description == "v1"


def test_submitting_a_missing_output_is_refused_once(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    complete_kernel(backend, tmp_path)
    with pytest.raises(BackendError, match=r"HTTP 400: .*no output nothing.csv"):
        backend.submit("severstal-steel-defect-detection", KERNEL, 1, "nothing.csv", "x")
    assert standin.count("CreateCodeSubmission") == 1


# -- faults ------------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_says(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    backend.push(make_kernel(tmp_path / "kernel"))
    standin.inject("GetKernelSessionStatus", Fault.rate_limited(7))
    assert backend.status(KERNEL).status is RunStatus.RUNNING
    assert fake_time.sleeps == [7.0]
    assert [r.status for r in standin.calls("GetKernelSessionStatus")] == [429, 200]


def test_500_then_success_retries_with_backoff(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    standin.inject("SaveKernel", Fault.http(500), Fault.http(503))
    assert backend.push(make_kernel(tmp_path / "kernel")).version == 1
    assert fake_time.sleeps == [1.0, 2.0]
    assert len(standin.kernel_versions(KERNEL)) == 1


def test_jitter_shortens_the_backoff(standin: KaggleStandIn, tmp_path: Path) -> None:
    time = FakeClock()
    backend = KaggleBackend(
        sleep=time.sleep,
        clock=time.clock,
        rng=lambda: 1.0,
        retry=RetryPolicy(backoff=Backoff(4.0, 2.0, 60.0), jitter=0.5),
    )
    standin.inject("GetDataset", Fault.http(502))
    backend.publish(make_dataset(tmp_path / "ds"))
    backend.publish(make_dataset(tmp_path / "ds"))
    assert time.sleeps == [2.0]


def test_a_dropped_connection_is_retried(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    complete_kernel(backend, tmp_path)
    standin.inject("ListKernelSessionOutput", Fault.dropped())
    standin.inject("Download", Fault.dropped())
    result = backend.output(KERNEL, tmp_path / "out")
    assert len(result.files) == 7
    assert fake_time.sleeps == [1.0, 2.0]  # both failures hit the first page's attempts
    assert [r.status for r in standin.calls("ListKernelSessionOutput")][:2] == [None, 200]


def test_a_push_whose_answer_is_lost_is_not_pushed_twice(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    standin.inject("SaveKernel", Fault.dropped(after_processing=True))
    result = backend.push(make_kernel(tmp_path / "kernel"))
    assert result.version == 1 and result.kernel == KERNEL
    assert len(standin.kernel_versions(KERNEL)) == 1
    assert standin.count("SaveKernel") == 1

    standin.inject("SaveKernel", Fault.http(500, after_processing=True))
    assert backend.push(make_kernel(tmp_path / "kernel")).version == 2
    assert len(standin.kernel_versions(KERNEL)) == 2


def test_a_dataset_version_whose_answer_is_lost_is_not_made_twice(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    folder = make_dataset(tmp_path / "ds")
    standin.inject("CreateDataset", Fault.dropped(after_processing=True))
    assert backend.publish(folder).created
    standin.inject("CreateDatasetVersion", Fault.http(500, after_processing=True))
    assert not backend.publish(folder).created
    assert [v.number for v in standin.dataset_versions(DATASET)] == [1, 2]
    assert standin.count("CreateDataset") == 1 and standin.count("CreateDatasetVersion") == 1


def test_a_push_refused_before_processing_is_pushed_once_on_retry(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    standin.inject("SaveKernel", Fault.dropped())
    assert backend.push(make_kernel(tmp_path / "kernel")).version == 1
    assert len(standin.kernel_versions(KERNEL)) == 1
    assert standin.count("SaveKernel") == 2


@pytest.mark.parametrize("status", [400, 404])
def test_client_errors_are_not_retried(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path, status: int
) -> None:
    standin.inject("SaveKernel", Fault.http(status, "no such thing"))
    with pytest.raises(BackendError, match=f"push {KERNEL}: HTTP {status}: no such thing") as info:
        backend.push(make_kernel(tmp_path / "kernel"))
    assert not isinstance(info.value, AuthError)
    assert standin.count("SaveKernel") == 1
    assert fake_time.sleeps == []


def test_retries_are_bounded_in_attempts(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    backend.push(make_kernel(tmp_path / "kernel"))
    standin.inject("GetKernelSessionStatus", *[Fault.http(500)] * 10)
    with pytest.raises(BackendError, match=r"HTTP 500.*gave up after 4 attempts"):
        backend.status(KERNEL)
    assert standin.count("GetKernelSessionStatus") == 4
    assert fake_time.sleeps == [1.0, 2.0, 4.0]


def test_retries_are_bounded_in_time(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    backend.push(make_kernel(tmp_path / "kernel"))
    standin.inject("GetKernelSessionStatus", Fault.rate_limited(60), Fault.rate_limited(60))
    with pytest.raises(BackendError, match=r"HTTP 429.*gave up after 2 attempts"):
        backend.status(KERNEL)
    assert fake_time.sleeps == [60.0]


def test_a_submission_is_not_repeated_after_an_ambiguous_failure(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    complete_kernel(backend, tmp_path)
    standin.inject("CreateCodeSubmission", Fault.http(500, after_processing=True))
    with pytest.raises(BackendError, match="HTTP 500"):
        backend.submit("severstal-steel-defect-detection", KERNEL, 1, "submission.csv", "m")
    assert standin.count("CreateCodeSubmission") == 1
    assert len(standin.submissions) == 1

    standin.inject("CreateCodeSubmission", Fault.rate_limited(3))
    backend.submit("severstal-steel-defect-detection", KERNEL, 1, "submission.csv", "m")
    assert fake_time.sleeps == [3.0]
    assert len(standin.submissions) == 2


def test_an_unreachable_server_is_retried_even_for_a_submission(
    standin: KaggleStandIn, backend: KaggleBackend, fake_time: FakeClock, tmp_path: Path
) -> None:
    complete_kernel(backend, tmp_path)
    standin.stop()  # connections are now refused: the request cannot have been processed
    with pytest.raises(BackendError, match=r"cannot be reached.*after 4 attempts"):
        backend.submit("severstal-steel-defect-detection", KERNEL, 1, "submission.csv", "m")
    assert fake_time.sleeps == [1.0, 2.0, 4.0]
    assert standin.submissions == []


# -- credentials -------------------------------------------------------------------------


def test_a_refused_key_is_an_auth_error_and_not_retried(
    standin: KaggleStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_standin(monkeypatch, standin, username=USER, key="wrong-" + KEY)
    time = FakeClock()
    backend = KaggleBackend(sleep=time.sleep, clock=time.clock)
    with pytest.raises(AuthError, match="HTTP 401") as info:
        backend.push(make_kernel(tmp_path / "kernel"))
    assert KEY not in str(info.value)
    assert standin.count("SaveKernel") == 0
    with pytest.raises(AuthError, match="HTTP 401"):
        backend.status(KERNEL)  # the client wraps this one in a ValueError
    assert time.sleeps == []


def test_pushing_into_another_account_is_denied(
    standin: KaggleStandIn, backend: KaggleBackend, tmp_path: Path
) -> None:
    with pytest.raises(AuthError, match=r"HTTP 403\): Permission denied"):
        backend.push(make_kernel(tmp_path / "kernel", ref="bob/someone-elses"))
    assert standin.count("SaveKernel") == 1


def test_missing_credentials_say_how_to_provide_them(
    standin: KaggleStandIn,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(AuthError) as info:
        KaggleBackend().push(make_kernel(tmp_path / "kernel"))
    message = str(info.value)
    assert "\n" not in message
    assert "KAGGLE_API_TOKEN" in message and "kaggle.json" in message
    assert capsys.readouterr().out == ""
    assert standin.requests == []


def test_credentials_from_kaggle_json(
    standin: KaggleStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_standin(monkeypatch, standin, username=None, key=None)
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = Path.home() / ".kaggle"
    config.mkdir(exist_ok=True)
    (config / "kaggle.json").write_text(json.dumps({"username": USER, "key": KEY}))
    (config / "kaggle.json").chmod(0o600)
    backend = KaggleBackend()
    assert backend.push(make_kernel(tmp_path / "kernel")).version == 1
    assert backend.username == USER
    assert {r.user for r in standin.calls("SaveKernel")} == {USER}


def test_credentials_from_an_access_token(
    standin: KaggleStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = "token-" + KEY
    standin.tokens[token] = USER
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    use_standin(monkeypatch, standin, username=None, token=token)
    backend = KaggleBackend()
    assert backend.push(make_kernel(tmp_path / "kernel")).version == 1
    assert standin.count("IntrospectToken") >= 1
    assert {r.user for r in standin.calls("SaveKernel")} == {USER}


def test_the_key_never_leaks_into_messages_logs_or_files(
    standin: KaggleStandIn,
    backend: KaggleBackend,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)

    def leaky(pushed: PushedKernel) -> ExecutedKernel:
        out = pushed.scratch_dir / "out"
        out.mkdir()
        (out / "result.txt").write_text("fine\n")
        return ExecutedKernel(
            RunStatus.ERROR, out, log=f"oops {KEY}\n", failure_message=f"bad {KEY}"
        )

    standin.executor = leaky
    messages: list[str] = []
    standin.inject("GetKernelSessionStatus", Fault.http(500, f"server echoed {USER}:{KEY}"))
    standin.inject("SaveKernel", Fault.http(400, f"server echoed {USER}:{KEY}"))
    with pytest.raises(BackendError) as refused:
        backend.push(make_kernel(tmp_path / "kernel"))
    messages.append(str(refused.value))
    backend.push(make_kernel(tmp_path / "kernel"))
    backend.status(KERNEL)
    state = backend.status(KERNEL)
    messages.append(state.message)
    out = backend.output(KERNEL, tmp_path / "out")
    messages.append(out.log)

    assert "***" in messages[0] and "***" in state.message
    for text in messages:
        assert KEY not in text
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    for path in (tmp_path / "kernel").rglob("*"):
        assert KEY.encode() not in path.read_bytes(), path
    for record in standin.requests:
        assert KEY not in json.dumps(record.body)
    captured = capsys.readouterr()
    assert KEY not in caplog.text + captured.out + captured.err


def test_log_text_reads_kaggle_logs_and_passes_plain_text() -> None:
    raw = json.dumps(
        [
            {"stream_name": "stdout", "time": 0.1, "data": "one\n"},
            {"stream_name": "stderr", "time": 0.2, "data": "two\n"},
        ]
    )
    assert log_text(raw) == "one\ntwo\n"
    assert log_text("plain\ntext\n") == "plain\ntext\n"
    assert log_text("[1, 2]") == "[1, 2]"
