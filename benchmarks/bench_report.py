"""The report of a work folder: how long it takes to write, how big it is, how fast it renders.

Writes WORKDIR/report.html with `kernelgen report`'s core function, then opens it in
headless Chromium (Debian's `chromium`) several times, each in a fresh browser, and
prints the size and, per load, the load event and the first frame painted after it
(both from navigation start, in the browser's own clock).

    python benchmarks/bench_report.py WORKDIR [--loads 5] [--screenshot docs/report.png]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernelgen.report import write_report  # noqa: E402
from kernelgen.spec.project import Project  # noqa: E402
from tests.browser import Chromium, find_chromium  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, help="PNG of the page's top (header, summary, stages)")
    parser.add_argument("--height", type=int, default=1250, help="CSS pixels of the page in the screenshot")
    parser.add_argument("--scale", type=float, default=0.7, help="screenshot scale")
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        sys.exit("chromium is not installed (apt-get install chromium)")

    start = time.perf_counter()
    page = write_report(Project.load(), args.workdir)
    built = time.perf_counter() - start
    print(f"report {page}: {page.stat().st_size:,} bytes, written in {built:.2f} s")

    painted, loaded = [], []
    for _ in range(args.loads):
        with Chromium(executable) as browser:
            load = browser.load(page.as_uri())
            if load.errors:
                sys.exit(f"console errors: {load.errors}")
            painted.append(load.painted_ms)
            loaded.append(load.load_event_ms)
            if args.screenshot and len(painted) == 1:
                browser.screenshot(args.screenshot, height=args.height, scale=args.scale)
                print(f"screenshot {args.screenshot}: {args.screenshot.stat().st_size:,} bytes")
    print(
        f"{args.loads} loads, each in a fresh browser: load event median {statistics.median(loaded):.0f} ms "
        f"(max {max(loaded):.0f}); painted median {statistics.median(painted):.0f} ms (max {max(painted):.0f})"
    )


if __name__ == "__main__":
    main()
