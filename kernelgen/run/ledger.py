"""Every run remembered: a SQLite ledger in the work folder.

Each chain run and each `push --wait` appends what it ran: when, on which backend and
profile, from which git commit; each stage's kernel version, status, machine, run
time and GPU hours; every parameter with its value and source; every input with its
version; the metrics a stage wrote to `metrics.json`; and the submission with its
scores once Kaggle gives them. Rows are only ever added, each batch in a transaction
of its own, so a crash leaves what was written readable. The schema carries its
version (`PRAGMA user_version`) and is migrated forward on open, never dropped.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernelgen.errors import LedgerError

LEDGER_FILE = "ledger.sqlite"
METRICS_FILE = "metrics.json"

MIGRATIONS: tuple[str, ...] = (
    # 1: runs, what each stage ran with, and what it measured
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started TEXT NOT NULL,
        command TEXT NOT NULL,
        backend TEXT NOT NULL,
        profile TEXT NOT NULL,
        git_commit TEXT,
        git_dirty INTEGER
    );
    CREATE TABLE run_ends (
        run_id INTEGER PRIMARY KEY REFERENCES runs(id),
        ended TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE TABLE stages (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage INTEGER NOT NULL,
        phase TEXT NOT NULL,
        kernel TEXT NOT NULL,
        version INTEGER,
        accelerator TEXT NOT NULL,
        pinning TEXT NOT NULL,
        run_seconds REAL,
        gpu_hours REAL,
        PRIMARY KEY (run_id, stage)
    );
    CREATE TABLE params (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage INTEGER NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (run_id, stage, name)
    );
    CREATE TABLE inputs (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage INTEGER NOT NULL,
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        PRIMARY KEY (run_id, stage, kind, ref)
    );
    CREATE TABLE metrics (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        name TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    """,
    # 2: submissions and the scores Kaggle gives them, one row per state seen
    """
    CREATE TABLE submissions (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        seen TEXT NOT NULL,
        kernel TEXT NOT NULL,
        version INTEGER,
        ref TEXT NOT NULL,
        status TEXT NOT NULL,
        public_score REAL,
        private_score REAL
    );
    """,
    # 3: a row per cell of a matrix stage (the cell's name; empty for other stages)
    """
    CREATE TABLE stages_by_cell (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage INTEGER NOT NULL,
        cell TEXT NOT NULL DEFAULT '',
        phase TEXT NOT NULL,
        kernel TEXT NOT NULL,
        version INTEGER,
        accelerator TEXT NOT NULL,
        pinning TEXT NOT NULL,
        run_seconds REAL,
        gpu_hours REAL,
        PRIMARY KEY (run_id, stage, cell)
    );
    INSERT INTO stages_by_cell (run_id, stage, phase, kernel, version, accelerator, pinning, run_seconds, gpu_hours)
        SELECT run_id, stage, phase, kernel, version, accelerator, pinning, run_seconds, gpu_hours FROM stages;
    DROP TABLE stages;
    ALTER TABLE stages_by_cell RENAME TO stages;
    CREATE TABLE params_by_cell (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage INTEGER NOT NULL,
        cell TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (run_id, stage, cell, name)
    );
    INSERT INTO params_by_cell (run_id, stage, name, value, source) SELECT run_id, stage, name, value, source FROM params;
    DROP TABLE params;
    ALTER TABLE params_by_cell RENAME TO params;
    CREATE TABLE inputs_by_cell (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage INTEGER NOT NULL,
        cell TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        PRIMARY KEY (run_id, stage, cell, kind, ref)
    );
    INSERT INTO inputs_by_cell (run_id, stage, kind, ref) SELECT run_id, stage, kind, ref FROM inputs;
    DROP TABLE inputs;
    ALTER TABLE inputs_by_cell RENAME TO inputs;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class StageEntry:
    """What one stage (one cell of a matrix stage, named by `cell`) of a run was and did."""

    stage: int
    phase: str
    cell: str = ""
    kernel: str = ""
    version: int | None = None
    accelerator: str = ""
    pinning: str = ""
    run_seconds: float | None = None
    gpu_hours: float | None = None
    params: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    inputs: Sequence[tuple[str, str]] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SubmissionEntry:
    kernel: str
    version: int | None
    ref: str
    status: str
    public_score: float | None = None
    private_score: float | None = None


@dataclass(frozen=True)
class RunSummary:
    """One run as `kernelgen runs` shows it."""

    id: int
    started: str
    ended: str | None
    outcome: str | None
    command: str
    backend: str
    profile: str
    git_commit: str | None
    git_dirty: bool | None
    stages: dict[str, str]
    params: dict[str, Any]
    sources: dict[str, str]
    inputs: dict[str, list[str]]
    metrics: dict[str, float]
    gpu_hours: float
    submission: dict[str, Any] | None

    @property
    def public_score(self) -> float | None:
        return self.submission.get("public_score") if self.submission else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started": self.started,
            "ended": self.ended,
            "outcome": self.outcome,
            "command": self.command,
            "backend": self.backend,
            "profile": self.profile,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "stages": dict(self.stages),
            "params": self.params,
            "sources": self.sources,
            "inputs": self.inputs,
            "metrics": self.metrics,
            "gpu_hours": self.gpu_hours,
            "public_score": self.public_score,
            "private_score": self.submission.get("private_score") if self.submission else None,
            "submission": self.submission,
        }


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    try:
        if read_only:
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        else:
            connection = sqlite3.connect(path, timeout=10)
        connection.execute("PRAGMA foreign_keys = ON")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: not a readable ledger ({exc})") from None
    if version > SCHEMA_VERSION:
        connection.close()
        raise LedgerError(f"{path}: ledger schema {version} is newer than this kernelgen's ({SCHEMA_VERSION})")
    return connection


def migrate(connection: sqlite3.Connection, path: Path, upto: int = SCHEMA_VERSION) -> None:
    """Apply the migrations the ledger lacks, each with its version bump in one transaction."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    for number in range(version + 1, upto + 1):
        try:
            connection.executescript(f"BEGIN; {MIGRATIONS[number - 1]} PRAGMA user_version = {number}; COMMIT;")
        except sqlite3.Error as exc:
            connection.rollback()
            raise LedgerError(f"{path}: cannot migrate the ledger to schema {number} ({exc})") from None


def _value(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value, sort_keys=True)


def git_state(folder: Path) -> tuple[str | None, bool | None]:
    """The commit checked out in `folder` and whether its tree differs from it; (None,
    None) when it is not a git checkout or git is missing."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


def entry_name(stage: int, cell: str, name: str) -> str:
    """How the ledger names a stage's parameter or metric: `stage4.epochs`, or
    `stage4.fold-0.epochs` for a cell of a matrix stage."""
    return f"stage{stage}.{cell}.{name}" if cell else f"stage{stage}.{name}"


def stage_key(stage: int, cell: str) -> str:
    """A stage's key among a run's stages: `4`, or `4/fold-0` for a cell."""
    return f"{stage}/{cell}" if cell else str(stage)


def read_metrics(folder: Path, stage: int, warn: Callable[[str], None], cell: str = "") -> dict[str, float]:
    """`metrics.json` of a stage's (or cell's) outputs as `stageN.<name>` (`stageN.<cell>.<name>`)
    -> number; what is not a flat object of finite numbers is left out with a warning."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        warn(f"{path}: not JSON ({exc}); its metrics are not recorded")
        return {}
    if not isinstance(raw, dict):
        warn(f"{path}: not a JSON object of names to numbers; its metrics are not recorded")
        return {}
    found = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            warn(f"{path}: {name!r} is not a finite number; left out")
            continue
        found[entry_name(stage, cell, name)] = float(value)
    return found


class Ledger:
    """The ledger of one work folder, open for adding one run."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self.run_id: int | None = None

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open (made if absent) and migrate the ledger at `path`; LedgerError when it cannot."""
        connection = _connect(path, read_only=False)
        try:
            migrate(connection, path)
        except LedgerError:
            connection.close()
            raise
        return cls(path, connection)

    def close(self) -> None:
        self._db.close()

    def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        try:
            with self._db:
                for sql, values in statements:
                    self._db.execute(sql, values)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: cannot write ({exc})") from None

    def start(
        self, *, started: str, command: str, backend: str, profile: str, git_commit: str | None, git_dirty: bool | None
    ) -> int:
        try:
            with self._db:
                cursor = self._db.execute(
                    "INSERT INTO runs (started, command, backend, profile, git_commit, git_dirty) VALUES (?, ?, ?, ?, ?, ?)",
                    (started, command, backend, profile, git_commit, None if git_dirty is None else int(git_dirty)),
                )
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: cannot write ({exc})") from None
        self.run_id = int(cursor.lastrowid or 0)
        return self.run_id

    def stage(self, entry: StageEntry) -> None:
        run = self._run()
        statements = [
            (
                "INSERT INTO stages (run_id, stage, cell, phase, kernel, version, accelerator, pinning, "
                "run_seconds, gpu_hours) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run, entry.stage, entry.cell, entry.phase, entry.kernel, entry.version, entry.accelerator,
                 entry.pinning, entry.run_seconds, entry.gpu_hours),
            ),
            *[
                (
                    "INSERT INTO params (run_id, stage, cell, name, value, source) VALUES (?, ?, ?, ?, ?, ?)",
                    (run, entry.stage, entry.cell, name, _value(v), source),
                )
                for name, (v, source) in sorted(entry.params.items())
            ],
            *[
                (
                    "INSERT OR IGNORE INTO inputs (run_id, stage, cell, kind, ref) VALUES (?, ?, ?, ?, ?)",
                    (run, entry.stage, entry.cell, kind, ref),
                )
                for kind, ref in entry.inputs
            ],
        ]
        self._write(statements)
        self.metrics(entry.metrics)

    def metrics(self, values: Mapping[str, float]) -> None:
        """Record metrics of this run by their full names (`stage4.val_dice`)."""
        self._write([("INSERT INTO metrics VALUES (?, ?, ?)", (self._run(), name, v)) for name, v in sorted(values.items())])

    def submission(self, entry: SubmissionEntry, *, seen: str) -> None:
        self._write(
            [
                (
                    "INSERT INTO submissions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self._run(), seen, entry.kernel, entry.version, entry.ref, entry.status, entry.public_score,
                     entry.private_score),
                )
            ]
        )

    def end(self, *, ended: str, outcome: str) -> None:
        self._write([("INSERT INTO run_ends VALUES (?, ?, ?)", (self._run(), ended, outcome))])

    def _run(self) -> int:
        if self.run_id is None:
            raise LedgerError(f"{self.path}: no run started")
        return self.run_id


def read_runs(path: Path) -> list[RunSummary]:
    """Every run of the ledger at `path`, oldest first; read-only (a chain may be writing)."""
    if not path.is_file():
        return []
    with closing(_connect(path, read_only=True)) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        try:
            return _summaries(db, has_submissions=version >= 2, has_cells=version >= 3)
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: not a readable ledger ({exc})") from None


def _summaries(db: sqlite3.Connection, *, has_submissions: bool, has_cells: bool) -> list[RunSummary]:
    runs = db.execute(
        "SELECT r.id, r.started, e.ended, e.outcome, r.command, r.backend, r.profile, r.git_commit, r.git_dirty "
        "FROM runs r LEFT JOIN run_ends e ON e.run_id = r.id ORDER BY r.id"
    ).fetchall()
    cell = "cell" if has_cells else "''"
    stages: dict[int, dict[str, str]] = {}
    hours: dict[int, float] = {}
    for run_id, stage, name, phase, gpu_hours in db.execute(
        f"SELECT run_id, stage, {cell}, phase, gpu_hours FROM stages ORDER BY stage, {cell}"
    ):
        stages.setdefault(run_id, {})[stage_key(stage, name)] = phase
        hours[run_id] = hours.get(run_id, 0.0) + (gpu_hours or 0.0)
    params: dict[int, dict[str, Any]] = {}
    sources: dict[int, dict[str, str]] = {}
    for run_id, stage, where, name, value, source in db.execute(f"SELECT run_id, stage, {cell}, name, value, source FROM params"):
        params.setdefault(run_id, {})[entry_name(stage, where, name)] = json.loads(value)
        sources.setdefault(run_id, {})[entry_name(stage, where, name)] = source
    inputs: dict[int, dict[str, list[str]]] = {}
    for run_id, stage, where, kind, ref in db.execute(f"SELECT run_id, stage, {cell}, kind, ref FROM inputs ORDER BY kind, ref"):
        inputs.setdefault(run_id, {}).setdefault(f"stage{stage_key(stage, where)}", []).append(f"{kind}:{ref}")
    metrics: dict[int, dict[str, float]] = {}
    for run_id, name, value in db.execute("SELECT run_id, name, value FROM metrics ORDER BY name"):
        metrics.setdefault(run_id, {})[name] = value
    submissions: dict[int, dict[str, Any]] = {}
    if has_submissions:
        for row in db.execute(
            "SELECT run_id, seen, kernel, version, ref, status, public_score, private_score FROM submissions ORDER BY rowid"
        ):
            keys = ("seen", "kernel", "version", "ref", "status", "public_score", "private_score")
            submissions[row[0]] = dict(zip(keys, row[1:], strict=True))
    return [
        RunSummary(
            id=run_id,
            started=started,
            ended=ended,
            outcome=outcome,
            command=command,
            backend=backend,
            profile=profile,
            git_commit=commit,
            git_dirty=None if dirty is None else bool(dirty),
            stages=stages.get(run_id, {}),
            params=dict(sorted(params.get(run_id, {}).items())),
            sources=sources.get(run_id, {}),
            inputs=inputs.get(run_id, {}),
            metrics=metrics.get(run_id, {}),
            gpu_hours=round(hours.get(run_id, 0.0), 6),
            submission=submissions.get(run_id),
        )
        for run_id, started, ended, outcome, command, backend, profile, commit, dirty in runs
    ]
