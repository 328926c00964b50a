"""The GPU estimate of the stages to run, and the check against the week's quota left."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kernelgen.backends.base import GpuQuota
from kernelgen.errors import QuotaError
from kernelgen.run.quota import Basis, check_quota, describe_quota, estimate_gpu_hours
from kernelgen.run.state import StageRecord
from kernelgen.spec.matrix import Cell
from kernelgen.spec.pipeline import load_pipeline
from tests.fakes import CHAINPIPE

REFRESH = datetime(2030, 1, 7, tzinfo=timezone.utc)


def bundled_estimate(records: dict[int, StageRecord], profile: str = "full", stages=(1, 2, 3, 4, 5)):
    pipeline = load_pipeline(CHAINPIPE)
    specs = [pipeline.stage(n) for n in stages]
    return estimate_gpu_hours([(s, Cell(s.number)) for s in specs], {s.number: s.session for s in specs}, lambda c: records.get(c.stage), profile)


def test_declared_estimates_of_the_gpu_stages() -> None:
    estimate = bundled_estimate({})
    assert [(s.stage, s.hours, s.basis) for s in estimate.stages] == [
        (1, 3.5, Basis.DECLARED),
        (2, 0.25, Basis.DECLARED),
        (4, 4.0, Basis.DECLARED),
    ]
    assert estimate.hours == pytest.approx(7.75)
    assert estimate.describe() == (
        "7.75 h (stage 1: 3.50 h (declared); stage 2: 0.25 h (declared); stage 4: 4.00 h (declared))"
    )


def test_a_recorded_run_replaces_the_declared_figure_for_its_profile_only() -> None:
    records = {4: StageRecord(run_seconds=2.5 * 3600, run_profile="full"), 1: StageRecord(run_seconds=60.0, run_profile="smoke")}
    by_stage = {s.stage: s for s in bundled_estimate(records).stages}
    assert (by_stage[4].hours, by_stage[4].basis) == (2.5, Basis.LAST_RUN)
    assert (by_stage[1].hours, by_stage[1].basis) == (3.5, Basis.DECLARED)
    smoke = {s.stage: s for s in bundled_estimate(records, profile="smoke").stages}
    assert smoke[1].basis is Basis.LAST_RUN and smoke[1].hours == pytest.approx(60 / 3600)


def test_a_gpu_stage_without_any_figure_counts_nothing_and_says_so(tmp_path) -> None:
    folder = tmp_path / "kernel-metadata"
    folder.mkdir()
    (folder / "stage1.toml").write_text('stage = 1\nmodule = "p.a"\ntitle = "Stage number 1"\nenable_gpu = true\n')
    pipeline = load_pipeline(tmp_path)
    estimate = estimate_gpu_hours([(pipeline.stage(1), Cell(1))], {1: pipeline.stage(1).session}, lambda c: None, "full")
    assert estimate.hours == 0.0
    assert "stage 1: no estimate (declare gpu_hours in its TOML)" in estimate.describe()


def test_every_cell_of_a_matrix_stage_counts_on_its_own() -> None:
    pipeline = load_pipeline(CHAINPIPE)
    spec = pipeline.stage(4)
    cells = [Cell(4, (("fold", k),)) for k in range(3)]
    ran = {"4/fold-1": StageRecord(run_seconds=3600.0, run_profile="full")}
    estimate = estimate_gpu_hours([(spec, c) for c in cells], {4: spec.session}, lambda c: ran.get(c.key), "full")
    assert [(s.cell, s.hours, s.basis) for s in estimate.stages] == [
        ("fold-0", 4.0, Basis.DECLARED),
        ("fold-1", 1.0, Basis.LAST_RUN),
        ("fold-2", 4.0, Basis.DECLARED),
    ]
    assert estimate.hours == pytest.approx(9.0)
    assert "stage 4 fold-1: 1.00 h (last run)" in estimate.describe()


def test_left_is_allowed_less_used_and_reserved_never_negative() -> None:
    assert GpuQuota(used=20, reserved=4, allowed=30).left == 6
    assert GpuQuota(used=29, reserved=4, allowed=30).left == 0
    assert describe_quota(GpuQuota(12.5, 3, 30, REFRESH)) == (
        "12.50 h used, 3.00 h reserved, 30.00 h allowed, 14.50 h left; refreshes 2030-01-07 00:00 UTC"
    )


def test_an_estimate_over_what_is_left_is_refused_naming_both_figures() -> None:
    estimate = bundled_estimate({})
    quota = GpuQuota(used=28, reserved=0, allowed=30, refreshes=REFRESH)
    with pytest.raises(QuotaError) as caught:
        check_quota(estimate, quota)
    message = str(caught.value)
    assert "need about 7.75 h but 2.00 h of this week's GPU quota are left" in message
    assert "refreshes 2030-01-07 00:00 UTC" in message and "--ignore-quota" in message
    assert "\n" not in message
    assert check_quota(estimate, quota, ignore=True) is False
    assert check_quota(estimate, GpuQuota(used=0, reserved=0, allowed=30)) is True
