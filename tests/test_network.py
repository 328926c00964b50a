"""Kaggle out of reach: every retry said on stderr, a command with no way to Kaggle failing
fast with its cause, and a chain whose kernels run on riding out a lost connection.

The official client talks to the local stand-in; "no network" is a proxy that does not
resolve or refuses, or a stand-in that drops connections.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernelgen.backends.kaggle import KaggleBackend
from kernelgen.backoff import Backoff
from kernelgen.cli import main
from kernelgen.clock import Timing
from kernelgen.errors import KernelFailedError
from kernelgen.run.progress import PlainReporter
from kernelgen.run.scheduler import ChainOptions
from kernelgen.spec.project import Project
from tests.fakes import CHAINPIPE, FakeClock, quick_executor, run_chain
from tests.kaggle_standin import Fault, KaggleStandIn, KernelScript, use_standin

USER = "net-user"
KEY = "net-secret-key-4567"
PROJECT = Project.load(project_dir=CHAINPIPE)


@pytest.fixture
def kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleStandIn]:
    with KaggleStandIn(
        tmp_path / "server",
        executor=quick_executor(set()),
        credentials={USER: KEY},
        kernel_script=KernelScript(running_polls=3),
    ) as server:
        use_standin(monkeypatch, server, username=USER, key=KEY)
        yield server
        assert server.count("CONNECT") == 0


def test_each_retry_is_one_line_on_stderr(kaggle: KaggleStandIn) -> None:
    kaggle.inject("GetAcceleratorQuotaStatistics", Fault.http(503), Fault.http(502))
    clock = FakeClock()
    shown = CliRunner().invoke(main, ["quota"], obj=Timing(clock.clock, clock.sleep))
    assert shown.exit_code == 0, shown.output
    assert shown.stderr.splitlines() == [
        f"kernelgen: GPU quota failed (HTTP 503); attempt 2 of 6 in {clock.sleeps[0]:.0f} s",
        f"kernelgen: GPU quota failed (HTTP 502); attempt 3 of 6 in {clock.sleeps[1]:.0f} s",
    ]
    assert shown.stdout.splitlines()[0] == "GPU quota this week"


def quota_in_a_process(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """`kernelgen quota` in a process of its own, on the real clock; and how long it took."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kernelgen", "quota"], env=env, capture_output=True, text=True, timeout=60
    )
    return done, time.monotonic() - started


def client_env(tmp_path: Path, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and k.lower() not in ("no_proxy",)}
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        env.pop(name, None)
    env.update(HOME=str(tmp_path), KAGGLE_API_ENVIRONMENT="LOCALHOST", KAGGLE_USERNAME=USER, KAGGLE_KEY=KEY)
    env.update(changes)
    return env


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("proxy", "cause"),
    [
        ("http://kaggle-proxy.invalid:3128", "the proxy http://kaggle-proxy.invalid:3128 does not resolve (DNS)"),
        ("http://127.0.0.1:{port}", "the proxy http://127.0.0.1:{port} cannot be reached"),
    ],
)
def test_a_command_that_cannot_reach_kaggle_fails_fast_naming_the_cause(tmp_path: Path, proxy: str, cause: str) -> None:
    port = closed_port()
    proxy, cause = proxy.format(port=port), cause.format(port=port)
    done, seconds = quota_in_a_process(client_env(tmp_path, HTTP_PROXY=proxy, HTTPS_PROXY=proxy))
    assert done.returncode == 1
    assert seconds < 15
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("kernelgen: error: GPU quota: ") and cause in line


def test_no_network_is_retried_for_seconds_then_named(tmp_path: Path) -> None:
    """Nothing answers where the client sends its requests: each retry is said, and the
    command gives up within 15 s naming the refused connection."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 80)) == 0:
            pytest.skip("something listens on port 80 here, where the client would connect")
    done, seconds = quota_in_a_process(client_env(tmp_path))
    assert done.returncode == 1
    assert seconds < 15
    *retries, error = done.stderr.strip().splitlines()
    assert retries and all("attempt" in line and " of 6 in " in line for line in retries)
    assert error.startswith("kernelgen: error: GPU quota: the connection to Kaggle was refused or timed out")


def test_polls_ride_out_a_lost_connection_while_the_kernels_run(
    kaggle: KaggleStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    backend = KaggleBackend(sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
    # stage 1's first two polls find no connection, six attempts each; the third gets through
    kaggle.inject("GetKernelSessionStatus", *[Fault.dropped() for _ in range(12)])
    out = io.StringIO()
    result = run_chain(
        PROJECT, backend, tmp_path / "work", clock, [1], username=USER,
        options=ChainOptions(backoff=Backoff(10, 1.5, 60)), reporter=PlainReporter(out),
    )
    assert result.stages == {1: "complete"}
    notes = [line for line in out.getvalue().splitlines() if "keeps running on Kaggle" in line]
    assert len(notes) == 2
    assert notes[0].startswith(
        "stage 1: status of net-user/chain-pipe-stage1-fit/1: the connection to Kaggle was dropped before an answer"
    )
    assert "asking again in 15 s (for up to 1800 s without contact)" in notes[0]
    assert "stage 1: Kaggle answers again" in out.getvalue()
    assert len(kaggle.kernel_versions(f"{USER}/chain-pipe-stage1-fit")) == 1
    assert capsys.readouterr().err.count("attempt 2 of 6") == 2


def test_a_connection_lost_longer_than_the_grace_fails_the_stage(kaggle: KaggleStandIn, tmp_path: Path) -> None:
    clock = FakeClock()
    backend = KaggleBackend(sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
    kaggle.inject("GetKernelSessionStatus", *[Fault.dropped() for _ in range(60)])
    with pytest.raises(KernelFailedError, match=r"stage 1: .*no contact with Kaggle for \d+ s .*rerun to resume polling"):
        run_chain(
            PROJECT, backend, tmp_path / "work", clock, [1], username=USER,
            options=ChainOptions(backoff=Backoff(10, 1.5, 60), network_grace=120),
        )
    assert len(kaggle.kernel_versions(f"{USER}/chain-pipe-stage1-fit")) == 1
