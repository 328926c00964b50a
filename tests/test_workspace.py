"""One command at a time on a work folder, and nothing pushed twice across a crash.

Commands that change a work folder hold it; a second one refuses before anything is
rendered or sent, while `status` and `report` still read it. A chain killed with
SIGKILL, on Kaggle (the official client against the stand-in) or here, is started
again and finishes without pushing anything a second time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kernelgen.cli import main
from kernelgen.clock import Timing
from kernelgen.errors import WorkFolderBusy
from kernelgen.run.lock import LOCK_FILE
from kernelgen.run.workspace import BackendKind, Workspace
from kernelgen.spec.project import Project
from tests.fakes import CHAINPIPE, FakeClock, quick_executor
from tests.kaggle_standin import Fault, KaggleStandIn, KernelScript, use_standin

USER = "lock-user"
KEY = "lock-secret-key-0123"
STAGES = [1, 2, 3, 4, 5]
SLUGS = {n: f"{USER}/chain-pipe-stage{n}-{name}" for n, name in enumerate(("fit", "score", "pick", "segment", "submit"), 1)}


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(CHAINPIPE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def kaggle(tmp_path: Path, project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleStandIn]:
    with KaggleStandIn(
        tmp_path / "server",
        executor=quick_executor(set()),
        credentials={USER: KEY},
        kernel_script=KernelScript(running_polls=0),
    ) as server:
        use_standin(monkeypatch, server, username=USER, key=KEY)
        yield server
        assert server.count("CONNECT") == 0


def invoke(*args: str, clock: FakeClock | None = None) -> Result:
    """The command in this process; with `clock`, waits take no time (moments stay real)."""
    timing = Timing(clock.clock, clock.sleep, time.time) if clock else None
    return CliRunner().invoke(main, list(args), obj=timing)


def pushes(server: KaggleStandIn) -> list[int]:
    return [len(server.kernel_versions(SLUGS[n])) for n in STAGES]


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kernelgen: error: "), result.stderr
    return lines[0]


def kernelgen_process(*args: str) -> subprocess.Popen[str]:
    """`kernelgen ARGS` in a process of its own (the current folder and environment)."""
    return subprocess.Popen(
        [sys.executable, "-m", "kernelgen", *args],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended before {what}: {process.stdout.read() if process.stdout else ''}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.1)


def test_a_held_folder_refuses_every_changing_command_before_anything_is_sent(
    kaggle: KaggleStandIn, project_dir: Path
) -> None:
    with Workspace.open(Project.load(), project_dir / "work", backend=BackendKind.KAGGLE, command="chain"):
        for args in (
            ["chain"],
            ["push", "--stage", "3"],
            ["output", "--stage", "3"],
            ["publish", "stage1"],
        ):
            line = one_error_line(invoke(*args, "--workdir", "work"))
            assert line.startswith(f"kernelgen: error: {project_dir / 'work'} is in use by `kernelgen chain` (pid {os.getpid()}, since ")
            assert line.endswith("; wait for it to end, or use another --workdir")
        assert kaggle.requests == []
        assert not (project_dir / "work" / "kernels").exists()
        # reading works beside the holder, and writes nothing
        status = invoke("status", "--json", "--workdir", "work")
        assert status.exit_code == 0, status.output
        assert {row["status"] for row in json.loads(status.output)} == {"not pushed"}
        assert invoke("report", "--workdir", "work").exit_code == 0
        assert not (project_dir / "work" / "state.json").exists()
    pushed = invoke("push", "--stage", "1", "--workdir", "work")
    assert pushed.exit_code == 0, pushed.output
    assert (project_dir / "work" / LOCK_FILE).read_text() == ""  # released, holder cleared


def test_a_hold_whose_process_ended_is_taken_over_with_a_note(project_dir: Path) -> None:
    work = project_dir / "work"
    work.mkdir()
    (work / LOCK_FILE).write_text(json.dumps({"pid": 999_999_999, "command": "chain", "since": "2026-01-01T00:00:00+00:00"}))
    notes: list[str] = []
    with Workspace.open(Project.load(), work, backend=BackendKind.LOCAL, command="push", notify=notes.append) as ws:
        assert ws.paths.root == work
    assert notes[0] == (
        f"{work}: taking over from `kernelgen chain` (pid 999999999, since 2026-01-01T00:00:00+00:00), "
        "which ended without letting go of it"
    )


def test_two_holders_in_one_process_are_refused_too(project_dir: Path) -> None:
    project = Project.load()
    with (
        Workspace.open(project, project_dir / "work", backend=BackendKind.LOCAL, command="chain"),
        pytest.raises(WorkFolderBusy),
    ):
        Workspace.open(project, project_dir / "work", backend=BackendKind.LOCAL, command="chain")


@pytest.mark.slow
def test_a_second_chain_and_a_push_beside_a_running_chain_push_nothing_and_a_killed_chain_resumes(
    kaggle: KaggleStandIn, project_dir: Path
) -> None:
    """Through the official client: a chain runs in its own process while a second chain and
    a push are refused; the first is killed with SIGKILL and started again: every kernel
    was pushed exactly once in all."""
    for n in (1, 4):
        kaggle.script_kernel(SLUGS[n], KernelScript(stuck=True))
    first = kernelgen_process("chain", "--workdir", "work")
    try:
        wait_for(lambda: pushes(kaggle)[0] == 1 and pushes(kaggle)[3] == 1, first, "push of stages 1 and 4")
        clock = FakeClock()
        line = one_error_line(invoke("chain", "--workdir", "work", clock=clock))
        assert f"is in use by `kernelgen chain` (pid {first.pid}, since " in line
        line = one_error_line(invoke("push", "--stage", "3", "--workdir", "work", clock=clock))
        assert f"is in use by `kernelgen chain` (pid {first.pid}, since " in line
        assert pushes(kaggle) == [1, 0, 0, 1, 0]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    for n in (1, 4):
        kaggle.kernel_versions(SLUGS[n])[0].script = KernelScript(running_polls=0)  # the runs end now
    again = invoke("chain", "--workdir", "work", clock=FakeClock())
    assert again.exit_code == 0, again.output
    assert "taking over from `kernelgen chain`" in again.output
    assert "stage 1: resuming version 1" in again.output and "stage 4: resuming version 1" in again.output
    assert pushes(kaggle) == [1, 1, 1, 1, 1]


@pytest.mark.slow
def test_a_chain_killed_between_a_push_and_its_answer_takes_that_version_when_started_again(
    kaggle: KaggleStandIn, project_dir: Path
) -> None:
    """The push reached Kaggle but the process died before it could record the version:
    the rerun finds the version the push made and follows it instead of pushing again."""
    kaggle.inject("SaveKernel", Fault(drop=True, after_processing=True, hold=60))
    first = kernelgen_process("chain", "--workdir", "work", "--jobs", "1")
    try:
        wait_for(lambda: sum(pushes(kaggle)) == 1, first, "the first push to take effect")
        state = json.loads((project_dir / "work" / "state.json").read_text())
        pending = [(n, r) for n, r in state["stages"].items() if r["intent"] == "push"]
        assert len(pending) == 1 and pending[0][1]["version"] is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    again = invoke("chain", "--workdir", "work", clock=FakeClock())
    assert again.exit_code == 0, again.output
    assert f"stage {pending[0][0]}: version 1 was made before the last run stopped; following it" in again.output
    assert pushes(kaggle) == [1, 1, 1, 1, 1]


@pytest.mark.slow
def test_a_killed_local_chain_finishes_in_one_more_run_with_the_same_submission(
    project_dir: Path, tmp_path: Path
) -> None:
    """`chain --local` killed with SIGKILL while a kernel runs: the next run pushes the lost
    runs again and ends like an uninterrupted chain; a run that really fails still stops it."""
    whole = CliRunner().invoke(main, ["chain", "--local", "--workdir", "whole"])
    assert whole.exit_code == 0, whole.output
    first = kernelgen_process("chain", "--local", "--workdir", "work")
    store = project_dir / "work" / "local-store" / "kernels"

    def running() -> bool:
        return any(json.loads(p.read_text())["status"] == "running" for p in store.glob("*/*/*/status.json"))

    try:
        wait_for(running, first, "a running local kernel")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    again = CliRunner().invoke(main, ["chain", "--local", "--workdir", "work"])
    assert again.exit_code == 0, again.output
    assert "was lost (the local run was interrupted (the process running it ended)); pushing it again" in again.output
    expected = (project_dir / "whole" / "outputs" / "stage5" / "submission.csv").read_bytes()
    assert (project_dir / "work" / "outputs" / "stage5" / "submission.csv").read_bytes() == expected

    (project_dir / "chainpipe" / "pick.py").write_text(
        (project_dir / "chainpipe" / "pick.py").read_text().replace("scores = sorted(", "raise ValueError('broken')\n    scores = sorted(")
    )
    failed = CliRunner().invoke(main, ["chain", "--local", "--workdir", "work"])
    assert failed.exit_code == 1
    assert "stage 3: Chain Pipe Stage3 Pick ended in error" in failed.stderr
    assert "ValueError: broken" in failed.stderr
    state = json.loads((project_dir / "work" / "state.json").read_text())
    assert state["stages"]["3"]["status"] == "error"
    assert state["stages"]["5"]["status"] == "complete"  # the earlier run's; not pushed again


def test_a_folder_of_the_local_backend_is_refused_to_kaggle_commands(project_dir: Path) -> None:
    pushed = CliRunner().invoke(main, ["push", "--stage", "1", "--local", "--workdir", "work"])
    assert pushed.exit_code == 0, pushed.output
    line = one_error_line(invoke("status", "--workdir", "work"))
    assert line.endswith("this work folder belongs to the local backend; use another --workdir")
