"""The report's plots, as PNG bytes, from a `StudySummary` (so from MLflow records only).

Matplotlib's object API with the Agg canvas (`Figure` + `FigureCanvasAgg`): no pyplot, no global
backend switch, no display needed, safe inside a process that also uses matplotlib otherwise.
Each function returns None when the study has nothing to plot for it.
"""
from __future__ import annotations

import io
import math
from typing import Sequence

from xstilts.analysis.tables import NONE, StudySummary, TrialPoint, xtreme_style_scores

DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {name: ("0.35" if name == NONE else palette(i % 10)) for i, name in enumerate(names)}


def heatmap(summary: StudySummary) -> bytes | None:
    """Intermediate x target: the all-language dev mean of each cell's English-dev-selected trial,
    as a delta to `none` (or raw when the study has no baseline)."""
    rows = [i for i in summary.intermediates if i != NONE] if summary.has_baseline else list(summary.intermediates)
    if not rows or not summary.targets:
        return None
    values, labels = [], []
    for intermediate in rows:
        row_values, row_labels = [], []
        for target in summary.targets:
            cell, base = summary.cell(intermediate, target), summary.cell(NONE, target)
            value = cell.selected_all_languages() if cell else None
            if summary.has_baseline:
                baseline = base.selected_all_languages() if base else None
                value = None if value is None or baseline is None else value - baseline
            row_values.append(math.nan if value is None else value)
            row_labels.append("–" if value is None else (f"{value:+.2f}" if summary.has_baseline else f"{value:.2f}"))
        values.append(row_values)
        labels.append(row_labels)
    from matplotlib.colors import TwoSlopeNorm

    finite = [abs(v) for r in values for v in r if not math.isnan(v)]
    figure = _figure(1.8 + 1.6 * len(summary.targets), 1.2 + 0.55 * len(rows))
    ax = figure.add_subplot()
    if summary.has_baseline:
        bound = max(finite + [0.5])
        image = ax.imshow(values, cmap="RdBu", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
        title = f"Δ all-language dev mean vs. `{NONE}` (English-dev-selected trials)"
    else:
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        title = "all-language dev mean (English-dev-selected trials; no baseline)"
    for r, row_labels in enumerate(labels):
        for c, text in enumerate(row_labels):
            ax.text(c, r, text, ha="center", va="center", fontsize=9,
                    color="black" if summary.has_baseline or math.isnan(values[r][c]) else "white")
    ax.set_xticks(range(len(summary.targets)), [f"{t}\n({summary.metrics.get(t, '?')})" for t in summary.targets], fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("target task")
    ax.set_ylabel("intermediate task")
    ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax, shrink=0.8)
    return _png(figure)


def language_bars(summary: StudySummary, target: str) -> bytes | None:
    """Per language: grouped bars, one per intermediate task (its English-dev-selected trial), and
    the majority-class floor as a dashed line."""
    languages = summary.languages.get(target, [])
    series = [(i, c.selected.language_scores()) for i in summary.intermediates
              if (c := summary.cell(i, target)) is not None and c.selected is not None]
    if not languages or not series:
        return None
    colors = _colors(summary.intermediates)
    figure = _figure(max(4.5, 1.1 * len(languages) + 2.5), 3.4)
    ax = figure.add_subplot()
    width = 0.8 / len(series)
    for n, (intermediate, scores) in enumerate(series):
        xs = [k - 0.4 + width * (n + 0.5) for k in range(len(languages))]
        ax.bar(xs, [scores.get(lang, math.nan) for lang in languages], width, label=intermediate,
               color=colors[intermediate], hatch="//" if intermediate == NONE else None)
    chance = summary.chance.get(target)
    if chance:
        for k, lang in enumerate(languages):
            if lang in chance:
                ax.hlines(chance[lang], k - 0.45, k + 0.45, colors="black", linestyles="dashed", linewidth=1,
                          label="majority class" if k == 0 else None)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_ylabel(f"dev {summary.metrics.get(target, '?')}")
    ax.set_title(f"{target}: per language (English-dev-selected trial per intermediate task)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def lr_sensitivity(summary: StudySummary) -> bytes | None:
    """English dev score vs. target learning rate (log x), one panel per target, one series per
    intermediate task; hollow markers: trials stopped early (their last epoch's score)."""
    points = [p for p in summary.points if p.target_lr and p.target_lr > 0 and p.en_dev is not None]
    if not points:
        return None
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colors = _colors(summary.intermediates)
    targets = [t for t in summary.targets if any(p.target == t for p in points)]
    figure = _figure(4.2 * len(targets), 3.4)
    axes = figure.subplots(1, len(targets), squeeze=False)[0]
    for ax, target in zip(axes, targets):
        for intermediate in summary.intermediates:
            mine = [p for p in points if p.target == target and p.intermediate == intermediate]
            done = [p for p in mine if p.completed]
            stopped = [p for p in mine if not p.completed]
            if done:
                ax.scatter([p.target_lr for p in done], [p.en_dev for p in done], color=colors[intermediate],
                           label=intermediate, s=28)
            if stopped:
                ax.scatter([p.target_lr for p in stopped], [p.en_dev for p in stopped], facecolors="none",
                           edgecolors=[colors[intermediate]], s=28,
                           label=f"{intermediate} (stopped early)")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel("target learning rate")
        ax.set_ylabel(f"English dev {summary.metrics.get(target, '?')}")
        ax.set_title(target, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle("Learning-rate sensitivity per intermediate task", fontsize=10)
    return _png(figure)


def search_progress(summary: StudySummary) -> bytes | None:
    """English dev score vs. trial start order, per target, with the best-so-far line over the
    completed trials (what the search had found after each trial)."""
    by_target: dict[str, list[TrialPoint]] = {}
    for point in summary.points:
        by_target.setdefault(point.target, []).append(point)
    targets = [t for t in summary.targets if any(p.en_dev is not None for p in by_target.get(t, []))]
    if not targets:
        return None
    colors = _colors(summary.intermediates)
    figure = _figure(4.2 * len(targets), 3.4)
    axes = figure.subplots(1, len(targets), squeeze=False)[0]
    for ax, target in zip(axes, targets):
        points = by_target[target]
        best, best_xs, best_ys = -math.inf, [], []
        for order, point in enumerate(points, start=1):
            if point.en_dev is None:
                continue
            color = colors.get(point.intermediate, "C0")
            style = {"color": color} if point.completed else {"facecolors": "none", "edgecolors": [color]}
            ax.scatter([order], [point.en_dev], s=28, **style)
            if point.completed and point.en_dev > best:
                best = point.en_dev
            if best > -math.inf:
                best_xs.append(order)
                best_ys.append(best)
        if best_xs:
            ax.step(best_xs, best_ys, where="post", color="black", linewidth=1.2, label="best so far")
        for intermediate in summary.intermediates:  # legend entries for the colours
            if any(p.intermediate == intermediate for p in points):
                ax.scatter([], [], color=colors[intermediate], s=28, label=intermediate)
        ax.set_xlabel("trial (start order)")
        ax.set_ylabel(f"English dev {summary.metrics.get(target, '?')}")
        ax.set_title(target, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    figure.suptitle("Search progress (hollow: stopped early by the scheduler)", fontsize=10)
    return _png(figure)


def study_comparison(summaries: Sequence[StudySummary]) -> bytes | None:
    """XTREME-style score per intermediate task, one bar per study."""
    scores = [xtreme_style_scores(s) for s in summaries]
    intermediates = ([NONE] if any(s.has_baseline for s in summaries) else []) + sorted(
        {i for s in summaries for i in s.intermediates if i != NONE})
    if not intermediates or len(summaries) < 2:
        return None
    figure = _figure(max(4.5, 1.3 * len(intermediates) + 2), 3.4)
    ax = figure.add_subplot()
    width = 0.8 / len(summaries)
    for n, (summary, x) in enumerate(zip(summaries, scores)):
        values = [x[i]["score"] if i in x and x[i]["score"] is not None else math.nan for i in intermediates]
        ax.bar([k - 0.4 + width * (n + 0.5) for k in range(len(intermediates))], values, width, label=summary.name)
    ax.set_xticks(range(len(intermediates)), intermediates, fontsize=8)
    ax.set_ylabel("XTREME-style score (targets present)")
    ax.set_title("Studies side by side", fontsize=9)
    ax.legend(fontsize=7)
    return _png(figure)


# ------------------------------------------------------------------------------------------------
# Research questions (xstilts.analysis.questions)
# ------------------------------------------------------------------------------------------------

def returns_curve(curves) -> bytes | None:
    """Score against the number of languages in the intermediate data, one panel per curve
    (`xstilts.analysis.questions.ReturnsCurve`): the measured points, `none` at n = 0 (dashed), the
    fitted a + b ln(n) and a dotted line at the first n whose fitted gain per added language is
    below the threshold."""
    curves = [c for c in curves if c.points and c.fit is not None]
    if not curves:
        return None
    columns = min(3, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure = _figure(max(6.0, 3.6 * columns + 0.4), 3.0 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False)
    for k, curve in enumerate(curves):
        ax = axes[k // columns][k % columns]
        ns = [p.n for p in curve.points]
        top = max(ns + [curve.fitted_point])
        xs = [1 + (top - 1) * i / 100 for i in range(101)]
        ax.plot(xs, [curve.fit(x) for x in xs], color="C0", linewidth=1.2,
                label=f"fit: {curve.fit.text(1, 2)}")
        ax.scatter(ns, [p.score for p in curve.points], color="C0", zorder=3, s=30, label="measured")
        if curve.baseline is not None:
            ax.scatter([0], [curve.baseline], color="0.35", marker="s", zorder=3, s=30, label=f"{NONE} (n = 0)")
            ax.axhline(curve.baseline, color="0.35", linestyle="dashed", linewidth=0.8)
        ax.axvline(curve.fitted_point, color="C3", linestyle="dotted", linewidth=1.2,
                   label=f"fitted gain/language < {curve.threshold:g} from n = {curve.fitted_point}")
        ax.set_xticks(sorted(set([0] * (curve.baseline is not None) + ns + [curve.fitted_point])))
        ax.set_xlabel("languages in the intermediate data (n)")
        ax.set_ylabel(f"all-language dev {curve.metric}")
        ax.set_title(curve.target, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    for k in range(len(curves), rows * columns):
        axes[k // columns][k % columns].set_visible(False)
    figure.suptitle("Diminishing returns: score against languages in the intermediate data", fontsize=10)
    return _png(figure)


def family_bars(result, grouping: str = "family") -> bytes | None:
    """Mean gain over the zero-shot baseline per language family (or distance bucket), one bar
    per arm (`xstilts.analysis.questions.FamilyGains`)."""
    rows = [r for r in result.rows if r.grouping == grouping]
    if not rows or not result.arms:
        return None
    colors = _colors([NONE] + result.arms)
    figure = _figure(max(4.5, 0.9 * len(rows) * max(1, len(result.arms)) ** 0.5 + 3), 3.4)
    ax = figure.add_subplot()
    width = 0.8 / len(result.arms)
    for n, arm in enumerate(result.arms):
        xs = [k - 0.4 + width * (n + 0.5) for k in range(len(rows))]
        values = [r.gains[arm] if r.gains[arm] is not None else math.nan for r in rows]
        ax.bar(xs, values, width, label=arm, color=colors[arm],
               hatch="//" if arm.endswith("[translate_train]") else None)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [f"{r.group}\n({len(r.languages)})" for r in rows], fontsize=7,
                  rotation=30 if len(rows) > 6 else 0)
    ax.set_ylabel(f"Δ dev {result.metric} vs {NONE} (zero-shot)")
    what = "language family" if grouping == "family" else "distance from English"
    ax.set_title(f"{result.target}: mean gain over the baseline by {what} (languages in brackets)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)
