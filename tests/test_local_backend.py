"""The local backend's store read directly: the live log, the quota, what a kernel mounts."""

from __future__ import annotations

import json
from pathlib import Path

from kernelgen.backends.base import RunStatus
from kernelgen.backends.local import LIVE_LOG, STATUS_FILE, LocalBackend

KERNEL = "local/tiny-pipe-measure"


def a_run(store: Path, status: RunStatus, *, live: str = "", log: str | None = None) -> Path:
    run_dir = store / "kernels" / KERNEL / "1"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STATUS_FILE).write_text(json.dumps({"status": status.value, "message": ""}))
    (run_dir / LIVE_LOG).write_text(live)
    if log is not None:
        (run_dir / "log.txt").write_text(log)
    return run_dir


def test_a_running_kernels_log_streams_its_finished_lines(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "store", {})
    try:
        a_run(tmp_path / "store", RunStatus.RUNNING, live="epoch 1\nepoch 2\nepo")
        assert list(backend.log_stream(KERNEL)) == ["epoch 1\n", "epoch 2\n"]
        a_run(tmp_path / "store", RunStatus.COMPLETE, live="epoch 1\n", log="epoch 1\nepoch 2\ndone")
        assert list(backend.log_stream(f"{KERNEL}/1")) == ["epoch 1\n", "epoch 2\n", "done"]
        assert backend.quota() is None
    finally:
        backend.close()
