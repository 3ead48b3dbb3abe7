"""The results table's pictures: the students' Pareto plot (``results_table.py --plot``) and learning curves read
from TensorBoard logs (``--curves``).

Each picture comes with a JSON file holding exactly the numbers drawn, so a test (or a reader) checks the data,
not the pixels. Rendering uses matplotlib's Agg canvas without pyplot, as fine_tune/plots.py does.

Pareto front: a point is on it when no other point has a better-or-equal main metric and fewer-or-equal parameters
(more-or-equal examples/s), strictly better in one of the two. Every plotted point counts, the teacher's too (it
is one of the models one could deploy). Labels: points drawn at one place share one label naming them all
(:func:`label_groups`); labels that would overlap are moved apart (:func:`place_labels`).

Curves: the training loss (``{task}/{training split}/{model}/loss``, written every ``--log_step``) and the task's
main metric on one evaluated split (``{task}/{split}/{metric}``, written by run_fine_tune_eval.py at each checkpoint
and by the evaluation during training; README.md, "TensorBoard tags"; older runs' tags are read too). A group of seeds is drawn as the mean over its runs with a min–max band,
at the steps every run of the group logged; when a log holds several values at one step (a resumed run logging
that step again), the last one written counts.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .tasks.metrics import OLD_TAGS, SHORT

if TYPE_CHECKING:
    from matplotlib.transforms import Bbox

BAND = "min-max over the group's runs"


# ---- Pareto ---------------------------------------------------------------------------------------------------


def pareto_front(points: list[tuple[float, float]], lower_x: bool) -> list[bool]:
    """Whether each (x, y) point is on the Pareto front: higher y is better; lower x is better when ``lower_x``
    (parameters), higher x otherwise (examples/s)."""

    def no_worse(a, b):  # a at least as good as b in both
        return a[1] >= b[1] and (a[0] <= b[0] if lower_x else a[0] >= b[0])

    return [not any(j != i and no_worse(q, p) and q != p for j, q in enumerate(points)) for i, p in enumerate(points)]


PANELS = (
    ("params", "parameters (log scale)", "lower", "log"),
    ("examples_per_s", "PyTorch examples/s (evaluation)", "higher", "linear"),
)


def pareto_data(table) -> dict:
    """The points of both panels from the table's numbers (:class:`fine_tune.results.Table`): per row (seed group)
    the main metric on the last reported split that is not a diagnostic (``Table.headline``; a diagnostic alone:
    its first metric) against its parameters and its inference examples/s."""
    split = table.headline or table.splits[-1]
    metric = table.metrics_of(split)[0] if split in table.diagnostics else table.main_metric
    panels = {}
    for key, label, better, scale in PANELS:
        points = []
        for r in table.records:
            st = r["splits"][split]["metrics"][metric]
            x = r["size"]["params"] if key == "params" else r["inference"]["examples_per_s"]
            if st["n"] == 0 or x is None:
                continue
            points.append(
                {
                    "group": r["group"],
                    "members": r["members"],
                    "x": x,
                    "y_mean": st["mean"],
                    "y_std": st["std"],
                    "n": st["n"],
                    "is_teacher": r["is_teacher"],
                }
            )
        for p, on in zip(points, pareto_front([(p["x"], p["y_mean"]) for p in points], lower_x=better == "lower")):
            p["on_front"] = on
        front = sorted((p for p in points if p["on_front"]), key=lambda p: (p["x"], p["y_mean"]))
        panels[key] = {
            "x_label": label,
            "x_better": better,
            "x_scale": scale,
            "points": points,
            "front": [p["group"] for p in front],
        }
    return {
        "task": table.task,
        "split": split,
        "metric": metric,
        "rule": table.rule_of(split).label(split),
        "error_bars": "sample std over the group's seeds (n>1)",
        "panels": panels,
    }


def label_groups(points: list[dict]) -> list[tuple[list[dict], str]]:
    """The labels of a panel: points drawn at one place (the same x and mean) share one label naming them all, in
    the panel's order; each: (its points, its text)."""
    at: dict[tuple, list[dict]] = {}
    for p in points:
        at.setdefault((p["x"], p["y_mean"]), []).append(p)
    return [
        (
            group,
            ", ".join(
                p["group"] + (" (teacher)" if p["is_teacher"] and "teacher" not in p["group"] else "") for p in group
            ),
        )
        for group in at.values()
    ]


def _overlap(a, b, pad: float) -> bool:
    return a.x0 < b.x1 + pad and b.x0 < a.x1 + pad and a.y0 < b.y1 + pad and b.y0 < a.y1 + pad


def place_labels(ax, labels: list, pad: float = 2.0) -> None:
    """Move labels (annotations offset from their points) apart: in order of their point's height on screen, lowest
    first, each label that overlaps one already placed goes up just above it, until it overlaps none. Deterministic;
    uses the figure's renderer (Agg) for the text's extent."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed: list[Bbox] = []  # the extents of the labels placed, in pixels
    for ann in sorted(labels, key=lambda a: (ax.transData.transform(a.xy)[1], ax.transData.transform(a.xy)[0])):
        for _ in range(len(labels) + 1):
            box = ann.get_window_extent(renderer)
            hit = [b for b in placed if _overlap(box, b, pad)]
            if not hit:
                break
            rise = max(b.y1 for b in hit) + pad - box.y0  # pixels
            dx, dy = ann.xyann
            ann.xyann = (dx, dy + rise * 72.0 / fig.dpi)
        placed.append(ann.get_window_extent(renderer))


def pareto_figure(data: dict):
    """The Pareto plot as a matplotlib Figure (Agg canvas, no pyplot), its labels placed apart (:func:`place_labels`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    ylabel = f"{data['split']} {SHORT.get(data['metric'], data['metric'])}"
    notes, labels = [], []
    for i, (key, *_rest) in enumerate(PANELS):
        panel = data["panels"][key]
        ax = fig.add_subplot(1, 2, i + 1)
        for p in panel["points"]:
            style: dict[str, Any] = (  # errorbar's keyword arguments
                dict(marker="*", markersize=14, color="tab:red")
                if p["is_teacher"]
                else dict(marker="o", markersize=7, color="tab:blue")
            )
            ax.errorbar(
                [p["x"]],
                [p["y_mean"]],
                yerr=[p["y_std"]] if p["n"] > 1 else None,
                linestyle="none",
                capsize=3,
                markeredgecolor="black" if p["on_front"] else style["color"],
                **style,
            )
        labels.append(
            (
                ax,
                [
                    ax.annotate(
                        text, (group[0]["x"], group[0]["y_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=7
                    )
                    for group, text in label_groups(panel["points"])
                ],
            )
        )
        front = sorted((p for p in panel["points"] if p["on_front"]), key=lambda p: p["x"])
        if front:
            ax.step(
                [p["x"] for p in front],
                [p["y_mean"] for p in front],
                color="gray",
                linestyle="--",
                where="post" if panel["x_better"] == "lower" else "pre",
                label="Pareto front",
            )
            ax.legend(fontsize=7, loc="lower right")
        if not panel["points"]:
            ax.text(0.5, 0.5, "no row has these numbers", ha="center", va="center", transform=ax.transAxes)
        elif panel["x_scale"] == "log":
            ax.set_xscale("log")
        ax.set_xlabel(panel["x_label"])
        ax.set_ylabel(ylabel)
        ax.set_title(f"({'ab'[i]}) {ylabel} vs {panel['x_label'].split(' (')[0]}", fontsize=10)
        ax.grid(True, alpha=0.3)
        notes.append(f"front ({'ab'[i]}): " + (", ".join(panel["front"]) or "none"))
    fig.text(
        0.01,
        0.01,
        f"{data['task']}, checkpoint: {data['rule']}; star: teacher; error bars: "
        f"{data['error_bars']}. " + "; ".join(notes),
        fontsize=7,
        wrap=True,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    for ax, anns in labels:  # after the layout: the labels' places on screen are final
        place_labels(ax, anns)
    return fig


def render_pareto(data: dict) -> bytes:
    buf = io.BytesIO()
    pareto_figure(data).savefig(buf, format="png")
    return buf.getvalue()


# ---- learning curves -------------------------------------------------------------------------------------------


def read_scalars(log_dir: Path) -> dict[str, dict[int, float]] | None:
    """Every scalar tag of a TensorBoard folder as {step: value} (the last value written at each step); None when
    the folder holds no event file."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir() or not any("tfevents" in p.name for p in log_dir.iterdir() if p.is_file()):
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        last: dict[int, tuple[tuple[float, int], float]] = {}
        for i, ev in enumerate(acc.Scalars(tag)):  # files in name (= start time) order, each in write order
            key = (ev.wall_time, i)
            if ev.step not in last or key >= last[ev.step][0]:
                last[ev.step] = (key, float(ev.value))
        out[tag] = {step: v for step, (_, v) in sorted(last.items())}
    return out


def loss_tag(scalars: dict, config: dict, task: str) -> str | None:
    """The training loss tag of a run: ``{task}/{training split}/{model}/loss`` (its tag prefix: the training split
    is ``--dataset``, or for offline distillation the logits data set's split, ``logits_split``; before issue 32
    offline distillation logged under the data set's name, ``--dataset``), else the one tag of the task ending in
    ``/loss`` four levels deep (a config whose training split was resolved later)."""
    for split in (config.get("logits_split"), config.get("dataset")):
        exact = f"{task}/{split}/{config.get('model')}/loss"
        if split is not None and exact in scalars:
            return exact
    candidates = sorted(t for t in scalars if t.startswith(f"{task}/") and t.endswith("/loss") and t.count("/") == 3)
    return candidates[0] if candidates else None


def metric_tag(task: str, split: str, metric: str, scalars: dict | None = None) -> str:
    """The evaluation metric's tag, ``{task}/{split}/{metric}``; given a run's ``scalars``, the tag it logged it
    under: runs before issue 32 logged F1 as ``f1_score`` (OLD_TAGS)."""
    tag = f"{task}/{split}/{metric}"
    old = f"{task}/{split}/{OLD_TAGS[metric]}" if metric in OLD_TAGS else None
    return old if scalars is not None and old is not None and tag not in scalars and old in scalars else tag


def _band(series: list[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max over the runs at the steps every run logged."""
    if not series or any(not s for s in series):
        return [], [], [], []
    steps = sorted(set.intersection(*(set(s) for s in series)))
    mean = [sum(s[k] for s in series) / len(series) for k in steps]
    return steps, mean, [min(s[k] for s in series) for k in steps], [max(s[k] for s in series) for k in steps]


def curves_data(groups: list[list], names: list[str], task, splits: list[str] | None) -> dict:
    """Read every run's logs (a run without any is a one-line error naming its log folder) and compute each
    group's curves. ``groups``: seed groups of :class:`fine_tune.results.Experiment`; ``names``: their row names;
    ``splits``: ``--splits`` (its last one is the metric's split), else the task's dev split when logged, else the
    first logged labelled split."""
    logs = {}
    for members in groups:
        for e in members:
            scalars = read_scalars(e.exp.log_dir)
            if not scalars:
                raise UserError(
                    f"--curves: {e.name} has no TensorBoard scalars in its log folder {e.exp.log_dir} "
                    f"({'no event file' if scalars is None else 'its event files hold no scalar'})"
                )
            logs[e.name] = scalars
    metric = task.main_metric
    if splits:
        split = splits[-1]
        metric = task.metrics_for(split)[0] if split in task.diagnostics else metric
    else:
        logged = [
            s
            for s in [task.dev_split, *task.splits]
            if s in task.labelled and any(metric_tag(task.name, s, metric, sc) in sc for sc in logs.values())
        ]
        split = logged[0] if logged else task.dev_split
    mtag = metric_tag(task.name, split, metric)
    out = []
    for name, members in zip(names, groups):
        ltags = [loss_tag(logs[e.name], e.config, task.name) for e in members]
        steps, mean, low, high = _band([logs[e.name].get(t, {}) if t else {} for e, t in zip(members, ltags)])
        mtags = [metric_tag(task.name, split, metric, logs[e.name]) for e in members]
        esteps, emean, elow, ehigh = _band([logs[e.name].get(t, {}) for e, t in zip(members, mtags)])
        out.append(
            {
                "group": name,
                "members": [e.name for e in members],
                "n": len(members),
                "loss_tags": ltags,
                "steps": steps,
                "loss_mean": mean,
                "loss_low": low,
                "loss_high": high,
                "metric": metric,
                "metric_tag": mtag,
                "metric_tags": mtags,
                "eval_steps": esteps,
                "metric_mean": emean,
                "metric_low": elow,
                "metric_high": ehigh,
            }
        )
    return {
        "task": task.name,
        "split": split,
        "metric": metric,
        "band": BAND,
        "steps": "the steps every run of a group logged",
        "groups": out,
    }


def render_curves(data: dict) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    metric_label = f"{data['split']} {SHORT.get(data['metric'], data['metric'])}"
    for i, (key, xkey, ylabel) in enumerate(
        (("loss", "steps", "training loss"), ("metric", "eval_steps", metric_label))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        drawn = 0
        for k, g in enumerate(data["groups"]):
            if not g[xkey]:
                continue
            color = f"C{k % 10}"
            label = g["group"] + (f" (mean of {g['n']})" if g["n"] > 1 else "")
            ax.plot(g[xkey], g[f"{key}_mean"], color=color, label=label, marker="." if len(g[xkey]) < 30 else None)
            if g["n"] > 1:
                ax.fill_between(g[xkey], g[f"{key}_low"], g[f"{key}_high"], color=color, alpha=0.2, linewidth=0)
            drawn += 1
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"({'ab'[i]}) {ylabel} vs step", fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.text(
        0.01,
        0.01,
        f"{data['task']}; groups of seeds: mean line, band = {data['band']}, at {data['steps']}.",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
