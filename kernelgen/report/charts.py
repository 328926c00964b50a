"""The tool's own charts: the stage graph, the run timeline and learning curves.

Each returns None when matplotlib is not installed; callers then show tables.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

from kernelgen.clock import format_elapsed
from kernelgen.report.history import History
from kernelgen.report.panel import Figure
from kernelgen.report.plotting import figure_block, new_figure
from kernelgen.report.workfolder import StageFacts
from kernelgen.run.ledger import RunSummary
from kernelgen.run.state import Phase

PHASE_COLOURS: dict[Phase, str] = {
    Phase.WAITING: "#d9d9d9",
    Phase.QUEUED: "#cfe3ff",
    Phase.RUNNING: "#7fb2ff",
    Phase.COMPLETE: "#8fd19e",
    Phase.UNCHANGED: "#c8ecd0",
    Phase.ERROR: "#f28b82",
    Phase.CANCELLED: "#f6b26b",
    Phase.LOST: "#f6b26b",
    Phase.BLOCKED: "#ffe08a",
}


def _levels(stages: Mapping[int, StageFacts]) -> dict[int, int]:
    """Each stage's column: one more than the deepest stage it needs."""
    level: dict[int, int] = {}
    for number in stages:  # stages come in dependency order
        needs = [level[n] for n in stages[number].needs if n in level]
        level[number] = 1 + max(needs) if needs else 0
    return level


def _direct_needs(stages: Mapping[int, StageFacts]) -> dict[int, list[int]]:
    """What each stage needs, less what it needs only through another stage it needs:
    the arrows worth drawing."""
    above: dict[int, set[int]] = {}
    for number in stages:  # stages come in dependency order
        found: set[int] = set()
        for need in stages[number].needs:
            found |= {need} | above.get(need, set())
        above[number] = found
    return {
        number: [n for n in facts.needs if not any(n in above.get(m, set()) for m in facts.needs)]
        for number, facts in stages.items()
    }


def _rows(stages: Mapping[int, StageFacts], direct: Mapping[int, list[int]]) -> dict[int, float]:
    """Each stage's row: stages that need nothing stacked from 0, every other one level
    with what it directly needs (their mean row), one row apart at least within a column."""
    level = _levels(stages)
    row: dict[int, float] = {}
    for column in sorted(set(level.values())):
        members = [n for n in stages if level[n] == column]
        wanted = {
            n: sum(row[d] for d in direct[n]) / len(direct[n]) if direct[n] else float(i)
            for i, n in enumerate(members)
        }
        floor = -math.inf
        for number in sorted(members, key=lambda n: (wanted[n], n)):
            row[number] = max(wanted[number], floor)
            floor = row[number] + 1
    return row


def _cell_lines(facts: StageFacts) -> str:
    """A matrix stage's box lists its cells, each with where it stands."""
    return "".join(f"\n{c.cell}: {c.phase.value}" for c in facts.cells)


def _cell_alt(facts: StageFacts) -> str:
    if not facts.cells:
        return ""
    return f" ({len(facts.cells)} cells: {', '.join(f'{c.cell} {c.phase.value}' for c in facts.cells)})"


def stage_graph(stages: Mapping[int, StageFacts]) -> Figure | None:
    """Stages as boxes coloured by status, arrows from what each needs directly."""
    if not stages:
        return None
    level = _levels(stages)
    direct = _direct_needs(stages)
    rows = _rows(stages, direct)
    width, height = max(level.values()) + 1, max(rows.values()) + 1
    # A matrix stage's box is a line taller per cell; rows move apart to make room.
    extra = max(len(f.cells) for f in stages.values())
    spacing = 1.0 + 0.18 * extra
    fig = new_figure(max(2.6 * width, 5.0), 1.25 * height * spacing + 0.4)
    if fig is None:
        return None
    ax = fig.add_subplot()
    ax.set_axis_off()
    boxes = {}
    for number, facts in stages.items():
        title = textwrap.fill(facts.title, 22)
        version = f" v{facts.version}" if facts.version is not None else ""
        boxes[number] = ax.text(
            level[number],
            -rows[number] * spacing,
            f"stage {number}{version}\n{title}\n{facts.phase.value}{_cell_lines(facts)}",
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.5", "fc": PHASE_COLOURS[facts.phase], "ec": "#444444"},
        )
    for number, needs in direct.items():
        for need in needs:
            if need in boxes:
                ax.annotate(
                    "",
                    xy=boxes[number].get_position(),
                    xytext=boxes[need].get_position(),
                    arrowprops={
                        "arrowstyle": "-|>",
                        "color": "#444444",
                        "patchA": boxes[need].get_bbox_patch(),
                        "patchB": boxes[number].get_bbox_patch(),
                        "shrinkA": 3,
                        "shrinkB": 3,
                    },
                )
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-(height - 1) * spacing - 0.55 * spacing, 0.55 * spacing)
    names = ", ".join(f"stage {n}: {f.phase.value}{_cell_alt(f)}" for n, f in stages.items())
    return figure_block(fig, alt=f"Stage graph. {names}")


def _unit(total: float) -> tuple[float, str]:
    if total >= 2 * 3600:
        return 3600.0, "hours"
    if total >= 120:
        return 60.0, "minutes"
    return 1.0, "seconds"


def timeline(stages: Sequence[StageFacts]) -> Figure | None:
    """When each stage ran, from its push to the poll that saw it end."""
    timed = [f for f in stages if f.started is not None and f.ended is not None]
    if not timed:
        return None
    origin = min(f.started for f in timed if f.started is not None)
    end = max(f.ended for f in timed if f.ended is not None)
    scale, unit = _unit((end - origin).total_seconds())
    fig = new_figure(10, 0.45 * len(timed) + 1.1)
    if fig is None:
        return None
    ax = fig.add_subplot()
    labels = []
    for row, facts in enumerate(reversed(timed)):
        assert facts.started is not None and facts.seconds is not None
        start = (facts.started - origin).total_seconds() / scale
        width = max(facts.seconds / scale, 1e-3)
        ax.barh(row, width, left=start, color=PHASE_COLOURS[facts.phase], edgecolor="#444444")
        ax.text(start + width, row, f" {format_elapsed(facts.seconds)}", va="center", fontsize=8.5)
        labels.append(f"stage {facts.number}")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel(f"{unit} since the first push")
    ax.set_xlim(0, (end - origin).total_seconds() / scale * 1.12 or 1)
    ax.grid(axis="x", alpha=0.3)
    runs = ", ".join(f"stage {f.number} {format_elapsed(f.seconds or 0)}" for f in timed)
    return figure_block(fig, alt=f"Timeline of stage runs: {runs}")


def history_chart(history: History, title: str) -> Figure | None:
    """Learning curves side by side: losses, other metrics, learning rate (log scale)."""
    groups = history.groups()
    if not groups:
        return None
    fig = new_figure(4.2 * len(groups), 3.1)
    if fig is None:
        return None
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (name, columns) in zip(axes, groups, strict=True):
        colours: dict[str, str] = {}
        for column in columns:
            base = column.removeprefix("val_")
            style = "--" if column.startswith("val_") else "-"
            points = [(x, y) for x, y in zip(history.x, history.columns[column], strict=True) if math.isfinite(y)]
            (line,) = ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                style,
                marker="o",
                markersize=3,
                label=column,
                color=colours.get(base),
            )
            colours.setdefault(base, line.get_color())
        if name == "learning rate" and all(v > 0 for c in columns for v in history.columns[c] if math.isfinite(v)):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(history.x_name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    described = "; ".join(f"{name}: {', '.join(cols)}" for name, cols in groups)
    return figure_block(fig, alt=f"{title}. {described}")


def metrics_chart(runs: Sequence[RunSummary]) -> Figure | None:
    """Each metric across the runs that recorded it, one small chart a metric."""
    names = sorted({name for run in runs for name in run.metrics})
    if not names:
        return None
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig = new_figure(3.6 * columns, 2.6 * rows)
    if fig is None:
        return None
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        points = [(run.id, run.metrics[name]) for run in runs if name in run.metrics]
        ax.plot([p[0] for p in points], [p[1] for p in points], "-o", markersize=4)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("run")
        ax.set_xticks([p[0] for p in points])
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return figure_block(fig, alt=f"Metrics across runs: {', '.join(names)}")


def score_chart(runs: Sequence[RunSummary], validation: str) -> Figure | None:
    """The validation metric against the public score, a point a submitted run."""
    points = [(run.metrics[validation], run.public_score, run.id) for run in runs
              if validation in run.metrics and run.public_score is not None]
    if not points:
        return None
    fig = new_figure(4.2, 3.4)
    if fig is None:
        return None
    ax = fig.subplots()
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    for x, y, run_id in points:
        ax.annotate(f"run {run_id}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(validation)
    ax.set_ylabel("public score")
    ax.grid(alpha=0.3)
    described = "; ".join(f"run {r}: {x:.4g} vs {y:.5f}" for x, y, r in points)
    return figure_block(fig, alt=f"{validation} against the public score: {described}")
