"""push, status, output and publish from the command line, through the official client and
the stand-in, in a copy of the engine's fixture project (tests/fixtures/chainpipe)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kernelgen.cli import main
from kernelgen.clock import Timing
from tests.fakes import CHAINPIPE, FakeClock, quick_executor
from tests.kaggle_standin import KaggleStandIn, KernelScript, QuotaFigures, use_standin

USER = "cli-user"
KEY = "cli-secret-key-0000"
STAGE3 = f"{USER}/chain-pipe-stage3-pick"


@pytest.fixture
def kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleStandIn]:
    shutil.copytree(CHAINPIPE, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    with KaggleStandIn(
        tmp_path / "server",
        executor=quick_executor({5}),
        credentials={USER: KEY},
        kernel_script=KernelScript(running_polls=0),
    ) as server:
        use_standin(monkeypatch, server, username=USER, key=KEY)
        for slug in ("stage1", "stage2", "stage4"):
            server.seed_dataset(f"{USER}/{slug}", {"placeholder.csv": "a,b\n"})
        yield server
        assert server.count("CONNECT") == 0


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_push_status_and_output(kaggle: KaggleStandIn, tmp_path: Path) -> None:
    pushed = invoke("push", "--stage", "3", "--workdir", "work")
    assert pushed.exit_code == 0, pushed.output
    assert f"stage 3: pushed {STAGE3} version 1" in pushed.output
    assert len(kaggle.kernel_versions(STAGE3)) == 1

    status = invoke("status", "--json", "--workdir", "work")
    assert status.exit_code == 0, status.output
    rows = {row["stage"]: row for row in json.loads(status.output)}
    assert rows[3]["status"] == "complete" and rows[3]["version"] == 1
    assert rows[1]["status"] == "not pushed"

    table = invoke("status", "--workdir", "work", "--stage", "3")
    assert table.exit_code == 0 and "complete" in table.output

    fetched = invoke("output", "--stage", "3", "--workdir", "work")
    assert fetched.exit_code == 0, fetched.output
    assert json.loads((tmp_path / "work/outputs/stage3/choice.json").read_text())["threshold"] == 0.5
    assert (tmp_path / "work/outputs/stage3/chain-pipe-stage3-pick.log").is_file()


def test_push_wait_downloads_and_a_failed_run_exits_non_zero(kaggle: KaggleStandIn, tmp_path: Path) -> None:
    done = invoke("push", "--stage", "3", "--wait", "--workdir", "work")
    assert done.exit_code == 0, done.output
    assert "stage 3: complete" in done.output
    assert (tmp_path / "work/outputs/stage3/choice.json").is_file()

    failed = invoke("push", "--stage", "5", "--wait", "--workdir", "work", "--set", "threshold=0.9")
    assert failed.exit_code != 0
    assert "kernelgen: error: stage 5: ended in error" in failed.stderr
    assert "ValueError: broken input" in failed.stderr
    params = json.loads((tmp_path / "work/state.json").read_text())["stages"]["5"]["params"]
    assert params == {"threshold": 0.9, "class_thresholds": []}


def test_push_uses_the_threshold_stage_3_left(kaggle: KaggleStandIn, tmp_path: Path) -> None:
    assert invoke("push", "--stage", "3", "--wait", "--workdir", "work").exit_code == 0
    invoke("push", "--stage", "5", "--workdir", "work")
    notebook = json.loads((tmp_path / "work/kernels/stage5/stage5.ipynb").read_text())
    text = "".join("".join(c["source"]) for c in notebook["cells"])
    assert "threshold = 0.5  # from stage 3, version 1" in text


def test_publish_versions_an_existing_dataset(kaggle: KaggleStandIn, tmp_path: Path) -> None:
    missing = invoke("publish", "stage1", "--workdir", "work")
    assert missing.exit_code != 0
    assert "missing stage outputs" in missing.stderr
    outputs = tmp_path / "work/outputs/stage1"
    outputs.mkdir(parents=True)
    (outputs / "model.json").write_bytes(b"weights v1")
    (outputs / "split.csv").write_text("id,validation\na,1\n")
    first = invoke("publish", "stage1", "--workdir", "work")
    assert first.exit_code == 0, first.output
    assert f"new version of {USER}/stage1" in first.output
    (outputs / "model.json").write_bytes(b"weights v2")
    second = invoke("publish", "Stage1", "--workdir", "work")
    assert second.exit_code == 0, second.output
    assert f"new version of {USER}/stage1" in second.output
    assert kaggle.count("CreateDatasetVersion") == 2 and kaggle.count("CreateDataset") == 0
    unknown = invoke("publish", "stage9", "--workdir", "work")
    assert unknown.exit_code != 0 and "unknown dataset 'stage9'" in unknown.stderr


def test_missing_credentials_are_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("push", "--stage", "3", "--user", "someone", "--workdir", "work")
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kernelgen: error: ")
    assert "Traceback" not in result.output


def test_push_wait_then_chain_takes_that_version_as_its_own(kaggle: KaggleStandIn, tmp_path: Path) -> None:
    """A stage pushed and collected by `push --wait` is not pushed again by the chain."""
    from kernelgen.backends.kaggle import KaggleBackend
    from kernelgen.run.state import Phase
    from kernelgen.spec.project import Project
    from tests.fakes import run_chain

    stage1 = f"{USER}/chain-pipe-stage1-fit"
    pushed = invoke("push", "--stage", "1", "--wait", "--workdir", "work")
    assert pushed.exit_code == 0, pushed.output
    assert len(kaggle.kernel_versions(stage1)) == 1

    clock = FakeClock()
    backend = KaggleBackend(sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
    result = run_chain(Project.load(), backend, tmp_path / "work", clock, [1, 2, 3, 4], username=USER)
    assert result.stages[1] is Phase.UNCHANGED
    assert result.stages[2] is result.stages[3] is result.stages[4] is Phase.COMPLETE
    assert len(kaggle.kernel_versions(stage1)) == 1
    assert len(kaggle.kernel_versions(f"{USER}/chain-pipe-stage4-segment")) == 1


STAGE4 = f"{USER}/chain-pipe-stage4-segment"


def pushed_session(kaggle: KaggleStandIn) -> dict:
    """The session fields of the last SaveKernel request, as the client sent them."""
    body = kaggle.calls("SaveKernel")[-1].body
    keys = ("machineShape", "enableGpu", "enableTpu", "sessionTimeoutSeconds", "dockerImagePinningType")
    return {key: body[key] for key in keys if key in body}


def test_a_gpu_stage_pushes_its_machine_shape_time_limit_and_pinning(kaggle: KaggleStandIn) -> None:
    default = invoke("push", "--stage", "4", "--workdir", "work")
    assert default.exit_code == 0, default.output
    assert pushed_session(kaggle) == {
        "machineShape": "NvidiaTeslaT4",
        "enableGpu": True,
        "enableTpu": False,
        "sessionTimeoutSeconds": 41400,
        "dockerImagePinningType": "original",
    }
    assert kaggle.kernel_versions(STAGE4)[-1].pushed.machine_shape == "NvidiaTeslaT4"

    other = invoke("push", "--stage", "4", "--accelerator", "nvidial4", "--workdir", "work")
    assert other.exit_code == 0, other.output
    assert pushed_session(kaggle)["machineShape"] == "NvidiaL4"
    meta = json.loads((Path("work/kernels/stage4/kernel-metadata.json")).read_text())
    assert meta["machine_shape"] == "NvidiaL4"


def test_a_retired_accelerator_is_refused_before_any_request(kaggle: KaggleStandIn) -> None:
    refused = invoke("push", "--stage", "4", "--accelerator", "NvidiaTeslaP100", "--workdir", "work")
    assert refused.exit_code != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kernelgen: error: accelerator NvidiaTeslaP100 is retired")
    assert "NvidiaTeslaT4" in lines[0]
    assert kaggle.requests == []
    assert not Path("work/kernels").exists()


def test_a_cpu_stage_sends_no_accelerator_and_refuses_one(kaggle: KaggleStandIn) -> None:
    cpu = invoke("push", "--stage", "5", "--workdir", "work")
    assert cpu.exit_code == 0, cpu.output
    assert pushed_session(kaggle) == {
        "enableGpu": False,
        "enableTpu": False,
        "sessionTimeoutSeconds": 41400,
        "dockerImagePinningType": "original",
    }
    before = len(kaggle.requests)
    refused = invoke("push", "--stage", "5", "--accelerator", "NvidiaL4", "--workdir", "work")
    assert refused.exit_code != 0 and "stage 5 runs on a CPU" in refused.stderr
    assert len(kaggle.requests) == before


def test_quota_prints_the_weeks_figures(kaggle: KaggleStandIn) -> None:
    kaggle.gpu_quota = QuotaFigures(used=12.5, reserved=3.0, allowed=30.0, refreshes=datetime(2030, 1, 7, 0, 0))
    shown = invoke("quota")
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines() == [
        "GPU quota this week",
        "  used       12.50 h",
        "  reserved    3.00 h",
        "  allowed    30.00 h",
        "  left       14.50 h",
        "  refreshes 2030-01-07 00:00 UTC",
    ]


def test_chain_checks_the_quota_first_and_ignore_quota_goes_ahead(kaggle: KaggleStandIn) -> None:
    kaggle.gpu_quota = QuotaFigures(used=28.0, allowed=30.0)
    kaggle.executor = quick_executor(set())
    clock = FakeClock()
    refused = CliRunner().invoke(main, ["chain", "--workdir", "work"], obj=Timing(clock, clock.sleep))
    assert refused.exit_code == 1
    assert refused.output.splitlines()[:2] == [
        "GPU quota: 28.00 h used, 0.00 h reserved, 30.00 h allowed, 2.00 h left; refreshes 2030-01-07 00:00 UTC",
        "GPU hours this run needs: about 7.75 h (stage 1: 3.50 h (declared); stage 2: 0.25 h (declared); "
        "stage 4: 4.00 h (declared))",
    ]
    assert refused.stderr.strip().splitlines() == [
        "kernelgen: error: the GPU stages to run need about 7.75 h but 2.00 h of this week's GPU quota are left "
        "(refreshes 2030-01-07 00:00 UTC); run fewer stages, wait for the refresh, or pass --ignore-quota"
    ]
    assert kaggle.count("SaveKernel") == 0

    ahead = CliRunner().invoke(main, ["chain", "--workdir", "work", "--ignore-quota"], obj=Timing(clock, clock.sleep))
    assert ahead.exit_code == 0, ahead.output
    assert "going ahead as --ignore-quota asks" in ahead.output
    assert ahead.output.strip().splitlines()[-1] == "submission: " + str(Path("work/outputs/stage5/submission.csv").resolve())


def test_push_wait_shows_the_running_kernels_latest_log_line(kaggle: KaggleStandIn, tmp_path: Path) -> None:
    epochs = ("epoch 1/3 loss 0.61", "epoch 2/3 loss 0.44", "epoch 3/3 loss 0.40")
    kaggle.script_kernel(STAGE3, KernelScript(running_polls=3, running_log=epochs, cut_stream_after=1))
    clock = FakeClock()
    done = CliRunner().invoke(main, ["push", "--stage", "3", "--wait", "--workdir", "work"], obj=Timing(clock, clock.sleep))
    assert done.exit_code == 0, done.output
    following = [line for line in done.output.splitlines() if line.startswith("stage 3: running")]
    assert following == [
        "stage 3: running [0:00] - epoch 1/3 loss 0.61",
        "stage 3: running [0:25] - epoch 3/3 loss 0.40",  # the second connection was cut; the third replayed
    ]
    assert "stage 3: complete [0:47]" in done.output
    assert kaggle.count("LogStream") == 3 and clock.sleeps == [10.0, 15.0, 22.5]
    log = (tmp_path / "work/outputs/stage3/chain-pipe-stage3-pick.log").read_text()
    assert log.startswith("".join(f"{line}\n" for line in epochs))
