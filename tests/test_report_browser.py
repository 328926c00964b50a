"""The report of a local smoke chain, opened in headless Chromium (Debian's `chromium`).

Without Chromium the test is skipped, unless KERNELGEN_REQUIRE_BROWSER is set (CI
sets it after installing Chromium), so a missing browser cannot pass silently there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.browser import Chromium, find_chromium
from tests.conftest import LocalChain

MAX_BYTES = 5_000_000
MAX_RENDER_MS = 2000.0
OVERLAYS = 6  # stages/report.py draws this many of the 16 synthetic test images

STAGE_ROWS = """JSON.stringify([...document.querySelectorAll('#stage-table tr[data-stage]')].map(row => ({
  stage: row.dataset.stage,
  status: row.dataset.status,
  shown: row.querySelector('.status').textContent,
  visible: row.getBoundingClientRect().height > 0,
})))"""
IMAGES = """JSON.stringify([...document.images].map(image => ({
  section: image.closest('section').id,
  complete: image.complete,
  width: image.naturalWidth,
})))"""


def chromium_or_skip() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("KERNELGEN_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed and KERNELGEN_REQUIRE_BROWSER is set")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.mark.slow
def test_the_report_loads_in_chromium_with_every_stage_and_overlay(
    local_chain: LocalChain, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    executable = chromium_or_skip()
    page = local_chain.report
    size = page.stat().st_size
    state = json.loads((local_chain.workdir / "state.json").read_text())
    with Chromium(executable) as browser:
        first = browser.load(page.as_uri())
        rows = json.loads(browser.evaluate(STAGE_ROWS))
        images = json.loads(browser.evaluate(IMAGES))
        shot = browser.screenshot(tmp_path / "report.png", height=1400)
    record_property("report_bytes", size)
    record_property("render_ms", round(first.painted_ms, 1))
    print(f"report {size:,} bytes; load event {first.load_event_ms:.0f} ms, painted {first.painted_ms:.0f} ms")

    assert first.errors == []
    assert size < MAX_BYTES
    assert first.painted_ms < MAX_RENDER_MS
    # a first run in a fresh folder: every stage ran and completed
    assert {r["stage"]: r["status"] for r in rows} == {k: v["status"] for k, v in state["stages"].items()}
    assert all(r["shown"] == r["status"] == "complete" and r["visible"] for r in rows)
    assert len(rows) == 5
    overlays = [i for i in images if i["section"] == "panel-overlays"]
    assert len(overlays) == OVERLAYS
    assert all(i["complete"] and i["width"] > 0 for i in images)
    assert {"stages", "panel-curves", "panel-threshold", "panel-submission"} <= {i["section"] for i in images}
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 10_000
