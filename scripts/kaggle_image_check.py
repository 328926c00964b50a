"""Run the bundled pipeline's rendered notebooks under the versions of Kaggle's GPU image.

We develop on newer releases (pandas 3, numpy 2.4, Keras 3.15) than Kaggle's image
ships (see "The Kaggle image" in the design notes); this script checks that the
kernels still run there. It

1. makes a virtual environment ENV with the image's versions pinned
   (FRAMEWORK_FREE_PINS, FRAMEWORK_PINS below), ipykernel, pytest and hypothesis, and
   registers it as the Jupyter kernel `kaggle-image` (in ENV/share/jupyter/kernels/,
   found through JUPYTER_PATH; nothing outside ENV changes);
2. runs one notebook in that kernel that prints what it imports (interpreter and
   package versions) and stops when a pinned package is not at its pin;
3. runs the rendered notebooks with `kernelgen ... --jupyter-kernel kaggle-image`:
   kernelgen itself runs in this interpreter, as on a user's machine, and only the
   kernels run under the pins, as on Kaggle;
4. runs the quick unit tests of the framework-free stage code (FRAMEWORK_FREE_TESTS)
   in the pinned interpreter;
5. prints, per stage, ok or failed with the error line and the time taken, and exits
   non-zero when anything failed.

Two modes:

  python scripts/kaggle_image_check.py --env .kaggle-image-env
      All five stages: `kernelgen chain --local` (smoke profile, synthetic data) in a
      fresh work folder ENV/work. The environment is made with
      --system-site-packages so it reuses this machine's torch and torchvision (and
      segmentation-models-pytorch, which the stage 4 kernel would otherwise install
      itself): torch is NOT pinned to the image's 2.10, because other torch builds
      are CUDA downloads of several GB. The pins shadow the machine's copies.
      About 4 minutes on 2 CPU cores (stage 4 is most of it).

  python scripts/kaggle_image_check.py --env .kaggle-image-env-light --no-ml
      Only the stages that need no ML framework (3: threshold sweep, 5: submission),
      each by `kernelgen run --notebook` on inputs made here: the synthetic
      competition's train.csv and sample submission, with made-up classifier scores
      and masks. Each stage is then run again as a module in this interpreter (the
      versions we develop on), and its CSV and JSON outputs must be byte for byte the
      same. The environment is isolated (no system site packages) and holds only the
      framework-free pins: this is the mode CI runs (about a minute with a fresh
      environment).

Python here is 3.11 while the image has 3.12: torch for 3.12 would mean CUDA
downloads of several GB, so the pins are applied on 3.11. albumentations and opencv
are not installed: no stage imports them.
Options: --no-install skips pip (the environment must exist), --timeout caps the
stage runs and tests (seconds). An environment made for one mode is refused by the
other: give each its own --env.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNEL_NAME = "kaggle-image"
COMPETITION = "severstal-steel-defect-detection"

# Kaggle's GPU image (docker-python, mid-2026). numpy may float to 2.4 there; 2.0.2 is
# the older end and the one that differs most from what we develop on.
FRAMEWORK_FREE_PINS = {
    "numpy": "2.0.2",
    "pandas": "2.2.2",
    "scipy": "1.16.3",
    "matplotlib": "3.10.0",
    "PIL": "11.3.0",
}
FRAMEWORK_PINS = {"tensorflow": "2.20.0", "keras": "3.13.2", "timm": "1.0.26"}
# Imported by the kernels, reported, not pinned (see the module docstring).
REPORTED = ("torch", "torchvision", "segmentation_models_pytorch")
DISTRIBUTIONS = {"PIL": "pillow"}
TENSORFLOW_REQUIREMENTS = (
    # The CPU build of the same release on Linux x86-64 (as pyproject.toml's extra).
    "tensorflow-cpu=={v}; sys_platform == 'linux' and platform_machine == 'x86_64'",
    "tensorflow=={v}; sys_platform != 'linux' or platform_machine != 'x86_64'",
)
KERNEL_RUNTIME = ("ipykernel",)
# The unit tests of the code stages 3 and 5 run (with the libraries they share) import no
# ML framework; they run under the pins too, in both modes.
TEST_RUNTIME = ("pytest", "hypothesis")
FRAMEWORK_FREE_TESTS = (
    "tests/test_rle.py",
    "tests/test_traincsv.py",
    "tests/test_submission.py",
    "tests/test_scores.py",
    "tests/test_metrics.py",
    "tests/test_layout.py",
    "tests/test_synth.py",
    "tests/test_stage3.py",
    "tests/test_stage5.py",
)

LIGHT_STAGES = (3, 5)
ALL_STAGES = (1, 2, 3, 4, 5)


@dataclass
class StageResult:
    name: str  # "stage 3", or "unit tests"
    status: str  # ok, failed, not run
    seconds: float | None = None
    error: str = ""  # the error line; for the unit tests, pytest's summary


def say(text: str) -> None:
    print(text, flush=True)


def run_command(command: list[str], **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    say("$ " + shlex.join(command))
    return subprocess.run(command, check=False, **kwargs)


# --- the environment ----------------------------------------------------------------------


def requirements(ml: bool) -> list[str]:
    pins = dict(FRAMEWORK_FREE_PINS, **(FRAMEWORK_PINS if ml else {}))
    reqs = []
    for module, version in pins.items():
        if module == "tensorflow":
            reqs += [r.format(v=version) for r in TENSORFLOW_REQUIREMENTS]
        else:
            reqs.append(f"{DISTRIBUTIONS.get(module, module)}=={version}")
    return [*reqs, *KERNEL_RUNTIME, *TEST_RUNTIME]


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


def _uses_system_site(env: Path) -> bool:
    cfg = (env / "pyvenv.cfg").read_text(encoding="utf-8")
    match = re.search(r"^include-system-site-packages\s*=\s*(\w+)", cfg, re.MULTILINE)
    return bool(match) and match.group(1).lower() == "true"


# pip's word on an extra index that lacks a package (this machine's local mirrors).
_PIP_NOISE = re.compile(r"^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$")


def make_env(env: Path, *, ml: bool, install: bool) -> None:
    """Create ENV (reusing it when it is of the right kind), install the pins, register the kernel."""
    if (env / "pyvenv.cfg").is_file():
        if _uses_system_site(env) != ml:
            kind = "with" if _uses_system_site(env) else "without"
            sys.exit(
                f"{env}: made {kind} system site packages, for the other mode; "
                "remove it or give another --env"
            )
    elif install:
        say(f"creating {env} ({'with' if ml else 'without'} system site packages)")
        venv.EnvBuilder(with_pip=True, system_site_packages=ml, symlinks=os.name != "nt").create(env)
    else:
        sys.exit(f"{env}: no environment there (run without --no-install to make it)")
    python = str(env_python(env))
    if install:
        done = run_command(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements(ml)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in done.stderr.splitlines():
            if not _PIP_NOISE.search(line):
                print(line, file=sys.stderr, flush=True)
        if done.returncode:
            sys.exit(f"pip could not install the pins into {env}")
        done = run_command(
            [python, "-m", "ipykernel", "install", "--prefix", str(env), "--name", KERNEL_NAME,
             "--display-name", "Python (Kaggle image pins)"],
            stdout=subprocess.DEVNULL,
        )
        if done.returncode:
            sys.exit(f"could not register the {KERNEL_NAME} kernel in {env}")
    if not (env / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json").is_file():
        sys.exit(f"{env}: no {KERNEL_NAME} kernelspec (run without --no-install)")


# --- what the kernel imports -----------------------------------------------------------------

PROBE = """
import importlib, json, platform, sys
found = {"python": platform.python_version(), "executable": sys.executable}
for name in MODULES:
    try:
        found[name] = importlib.import_module(name).__version__
    except ImportError as exc:
        found[name] = f"not importable ({exc})"
print("PROBE " + json.dumps(found))
"""


def probe_kernel(env: Path, *, ml: bool) -> bool:
    """Print what the `kaggle-image` kernel imports; False when a pin is not what it runs."""
    sys.path.insert(0, str(REPO))
    import nbformat

    from kernelgen.backends.execute import execute_notebook

    # torch before TensorFlow: the other order crashes in one process (tests/conftest.py).
    pinned = dict(FRAMEWORK_FREE_PINS, **(FRAMEWORK_PINS if ml else {}))
    modules = [*FRAMEWORK_FREE_PINS, *(REPORTED + tuple(FRAMEWORK_PINS) if ml else ())]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(PROBE.replace("MODULES", repr(modules)))]
    result = execute_notebook(
        nbformat.writes(notebook).encode("utf-8"), env / "probe", kernel_name=KERNEL_NAME, timeout=600
    )
    line = next((x for x in result.log.splitlines() if x.startswith("PROBE ")), None)
    if not result.ok or line is None:
        say(f"the {KERNEL_NAME} kernel did not answer: {result.error or result.tail()}")
        return False
    found = json.loads(line[len("PROBE "):])
    say(f"kernel {KERNEL_NAME}: Python {found.pop('python')} ({found.pop('executable')})")
    ok = True
    for name, version in found.items():
        want = pinned.get(name)
        note = "" if want is None else (" (pinned)" if version == want else f" (NOT the pin {want})")
        ok = ok and (want is None or version == want)
        say(f"  {name} {version}{note}")
    return ok


# --- running the stages ------------------------------------------------------------------------


def kernelgen(*args: str) -> list[str]:
    """kernelgen from this checkout, in this interpreter."""
    return [sys.executable, "-m", "kernelgen", *args]


_STATUS_LINE = re.compile(r"^stage (\d+)(?: v\d+)?: (\w+) \[([\d:]+)\](?: - (.*))?$")


def _seconds(text: str) -> float:
    total = 0
    for part in text.split(":"):
        total = total * 60 + int(part)
    return float(total)


def run_chain(work: Path, deadline: float) -> list[StageResult]:
    """All stages through `kernelgen chain --local`; results from its plain progress lines
    (`stage N vV: STATUS [M:SS] - last message line`; the time runs from the push)."""
    command = kernelgen("chain", "--local", "--workdir", str(work), "--jupyter-kernel", KERNEL_NAME)
    say("$ " + shlex.join(command))
    last: dict[int, tuple[str, float, str]] = {}
    errors: list[str] = []
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        timer = threading.Timer(max(deadline - time.monotonic(), 0.0), process.kill)
        timer.start()
        assert process.stdout is not None
        for line in process.stdout:
            print("  | " + line, end="", flush=True)
            match = _STATUS_LINE.match(line.strip())
            if match:
                last[int(match[1])] = (match[2], _seconds(match[3]), match[4] or "")
            elif line.startswith("kernelgen: error: "):
                errors.append(line.strip().removeprefix("kernelgen: error: "))
        timer.cancel()
    if process.returncode and not errors:
        errors.append(f"the chain stopped (exit status {process.returncode}; --timeout?)")
    results = []
    for stage in ALL_STAGES:
        status, seconds, note = last.get(stage, ("not run", None, ""))
        name = f"stage {stage}"
        if status == "complete":
            results.append(StageResult(name, "ok", seconds))
        elif status in ("not run", "waiting", "blocked"):
            results.append(StageResult(name, "not run", None, note or (errors[:1] or [""])[0]))
        else:
            results.append(StageResult(name, "failed", seconds, note or status))
    return results


def _light_inputs(work: Path) -> dict[int, Path]:
    """Kaggle-shaped roots for stages 3 and 5 from the synthetic competition's CSV files.

    The classifier scores and the stage 4 masks are made up (seeded), but every mask
    is a real RLE of train.csv, so the readers' checks run on real-sized masks.
    """
    data = work / "data"
    done = run_command(kernelgen("synth", "--out", str(data)), cwd=REPO, stdout=subprocess.DEVNULL)
    if done.returncode:
        sys.exit("kernelgen synth failed")
    comp = data / "input" / COMPETITION
    rng = random.Random(0)
    with (comp / "train.csv").open(newline="") as handle:
        defects = list(csv.DictReader(handle))
    defective = {row["ImageId"] for row in defects}
    rles = [row["EncodedPixels"] for row in defects]

    stage3 = work / "stage3"
    (stage3 / "input" / "stage2").mkdir(parents=True)
    (stage3 / "input" / COMPETITION).symlink_to(comp, target_is_directory=True)
    with (stage3 / "input" / "stage2" / "train_missing_count.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", "allMissing", "validation"])
        for image in sorted(p.name for p in (comp / "train_images").iterdir()):
            centre = 0.25 if image in defective else 0.75
            held_out = int(rng.random() < 0.3)
            writer.writerow([image, f"{min(max(rng.gauss(centre, 0.2), 0.0), 1.0):.6f}", held_out])

    stage5 = work / "stage5"
    (stage5 / "input" / "stage4").mkdir(parents=True)
    (stage5 / "input" / "stage2").mkdir(parents=True)
    with (comp / "sample_submission.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames or [], list(reader)
    for row in rows:
        row["EncodedPixels"] = rng.choice(rles) if rng.random() < 0.3 else ""
    with (stage5 / "input" / "stage4" / "submission.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    images = list(dict.fromkeys(row.get("ImageId") or row["ImageId_ClassId"].rpartition("_")[0] for row in rows))
    with (stage5 / "input" / "stage2" / "test_missing_count.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", "allMissing"])
        writer.writerows([image, f"{rng.random():.6f}"] for image in images)
    return {3: stage3, 5: stage5}


def _same_as_current(stage: int, root: Path) -> str:
    """Run the stage as a module in this interpreter (the versions we develop on) on the same
    inputs; '' when it writes the same CSV and JSON files, else what differs. Plots are left
    out: matplotlib releases draw different bytes."""
    current = root.with_name(root.name + "-current")
    shutil.copytree(root / "input", current / "input", symlinks=True)
    done = run_command(
        kernelgen("run", "--stage", str(stage), "--root", str(current), "--profile", "smoke"),
        cwd=REPO, capture_output=True, text=True,
    )
    if done.returncode:
        return f"the same inputs failed in this interpreter: {done.stderr.strip()[-300:]}"
    names = sorted(
        p.name for p in (root / "working").iterdir() if p.suffix in (".csv", ".json")
    )
    differ = [n for n in names if (root / "working" / n).read_bytes() != (current / "working" / n).read_bytes()]
    if differ:
        return f"{', '.join(differ)} differ from this interpreter's ({current / 'working'})"
    say(f"  {', '.join(names)}: the same as this interpreter writes")
    return ""


def run_light(work: Path, deadline: float) -> list[StageResult]:
    """Stages 3 and 5 through `kernelgen run --notebook` on inputs made here; their CSV and
    JSON outputs must equal what the module writes under this interpreter's versions."""
    roots = _light_inputs(work)
    results = []
    for stage in LIGHT_STAGES:
        left = int(deadline - time.monotonic())
        if left <= 0:
            results.append(StageResult(f"stage {stage}", "not run", None, "--timeout reached"))
            continue
        start = time.monotonic()
        command = kernelgen(
            "run", "--stage", str(stage), "--root", str(roots[stage]), "--profile", "smoke",
            "--notebook", "--timeout", str(left), "--jupyter-kernel", KERNEL_NAME,
        )
        done = run_command(command, cwd=REPO, capture_output=True, text=True)
        seconds = time.monotonic() - start
        for line in (done.stdout + done.stderr).splitlines():
            say("  | " + line)
        if done.returncode == 0:
            differs = _same_as_current(stage, roots[stage])
            results.append(StageResult(f"stage {stage}", "failed" if differs else "ok", seconds, differs))
        else:
            errors = [x for x in done.stderr.splitlines() if x.startswith("kernelgen: error: ")]
            error = errors[0].removeprefix("kernelgen: error: ") if errors else done.stderr.strip()[-300:]
            results.append(StageResult(f"stage {stage}", "failed", seconds, error))
    return results


def run_unit_tests(env: Path, deadline: float) -> StageResult:
    """FRAMEWORK_FREE_TESTS (the quick ones) in the pinned interpreter."""
    left = deadline - time.monotonic()
    if left <= 0:
        return StageResult("unit tests", "not run", None, "--timeout reached")
    # One process: the pinned environment has no pytest-xdist, so the repo's -n/--dist go.
    command = [
        str(env_python(env)), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
        "-m", "not slow", *FRAMEWORK_FREE_TESTS,
    ]
    start = time.monotonic()
    try:
        done = run_command(command, cwd=REPO, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        return StageResult("unit tests", "failed", time.monotonic() - start, "--timeout reached")
    seconds = time.monotonic() - start
    lines = done.stdout.strip().splitlines()
    summary = lines[-1] if lines else done.stderr.strip()[-300:]
    if done.returncode:
        for line in lines[-40:]:
            say("  | " + line)
        return StageResult("unit tests", "failed", seconds, summary)
    return StageResult("unit tests", "ok", seconds, summary.strip("= "))


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the rendered notebooks under the versions of Kaggle's GPU image.",
        epilog="See the module docstring (scripts/kaggle_image_check.py) for what is pinned and why.",
    )
    parser.add_argument("--env", type=Path, default=Path(".kaggle-image-env"), help="virtual environment folder (made when missing)")
    parser.add_argument("--no-ml", action="store_true", help="only stages 3 and 5, which need no ML framework")
    parser.add_argument("--no-install", action="store_true", help="use ENV as it is: no pip, no kernelspec")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the stage runs in all (default 3600)")
    args = parser.parse_args(argv)
    ml = not args.no_ml
    env = args.env.resolve()
    started = time.monotonic()

    make_env(env, ml=ml, install=not args.no_install)
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(env / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")) if p
    )
    if not probe_kernel(env, ml=ml):
        say("the kernel does not run the pinned versions; nothing else was run")
        return 1
    setup_seconds = time.monotonic() - started

    work = env / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    deadline = time.monotonic() + args.timeout
    run_start = time.monotonic()
    results = run_chain(work, deadline) if ml else run_light(work, deadline)
    results.append(run_unit_tests(env, deadline))

    say(f"\nKaggle-image check ({'all stages' if ml else 'stages 3 and 5, no ML framework'}):")
    for r in results:
        took = f"{r.seconds:6.0f} s" if r.seconds is not None else "       -"
        say(f"  {r.name:10s} {r.status:8s} {took}" + (f"  {r.error}" if r.error else ""))
    say(
        f"environment and probe {setup_seconds:.0f} s, stages and tests {time.monotonic() - run_start:.0f} s; "
        f"outputs and logs under {work}"
    )
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
