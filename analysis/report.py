"""A study's report: its tables and plots as one self-contained HTML file (images embedded as
base64 data URIs: open it anywhere, mail it, attach it) and as Markdown with the PNG files beside
it; both logged to the study's parent MLflow run under `report/`.

Built from MLflow records only (`xstilts.analysis.tables.summarize` over `xstilts.analysis.records.iter_trials`).
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from xstilts.analysis import plots, questions
from xstilts.analysis.uncertainty import example_table, seed_table
from xstilts.analysis.run_stats import retrieval_layer_table, run_json, run_table
from xstilts.analysis.records import StudyRecord
from xstilts.analysis.tables import (NONE, StudySummary, Table, comparison_tables, language_gain_table, language_table,
                             selection_rules_table, summary_json, english_dev_table, zero_shot_table, best_per_target_table)

REPORT_ARTIFACT_DIR = "report"
HTML_NAME, MARKDOWN_NAME, JSON_NAME = "report.html", "report.md", "summary.json"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: .4em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85em; margin: .3em 0; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: right; white-space: nowrap; }
th.label, tbody th { text-align: left; }
thead th { background: #f2f2f2; } th.group { text-align: center; }
tr.baseline { background: #f7f7f0; } tr.chance { color: #777; font-style: italic; }
tr.oracle { background: #fff4e5; }
p.note { font-size: .8em; color: #555; margin: .2em 0; max-width: 70em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .8em; color: #555; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; font-size: .9em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; font-family: monospace; }
"""


@dataclass
class Figure:
    key: str  # file stem
    caption: str
    png: bytes

    @property
    def filename(self) -> str:
        return f"{self.key}.png"


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # Table | Figure | str (a paragraph)


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    json: Path
    images: tuple[Path, ...]

    @property
    def all(self) -> list[Path]:
        return [self.html, self.markdown, self.json, *self.images]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _figure(key: str, caption: str, png: bytes | None) -> list:
    return [Figure(key, caption, png)] if png else []


def question_sections(summary: StudySummary, returns_threshold: float = questions.DEFAULT_RETURNS_THRESHOLD) -> list[Section]:
    """The research-question sections (xstilts.analysis.questions), each only when the study has what it
    needs: both target_train values or several language families; two or more language counts in
    the intermediate data; English-only and non-English intermediate data; two or more types of
    intermediate task."""
    sections = []
    if questions.show_family_section(summary):
        section = Section("Gains by language family and distance from English")
        for target in summary.targets:
            result = questions.family_gains(summary, target)
            if result is None:
                continue
            section.blocks += [questions.family_table(result, "distance"), questions.family_table(result, "family")]
            families = {row.group for row in result.rows if row.grouping == "family" and row.group != "Indo-European"}
            grouping = "family" if len(families) >= 2 else "distance"
            section.blocks += _figure(f"{grouping}-gains-{_slug(target)}",
                                      f"{target}: mean gain over the zero-shot baseline per {'language family' if grouping == 'family' else 'distance bucket'}"
                                      " (hatched: translate-train arms).", plots.family_bars(result, grouping))
        if section.blocks:
            sections.append(section)
    curves = questions.returns_curves(summary, returns_threshold)
    if curves:
        sections.append(Section("Diminishing returns: languages in the intermediate data", [
            *[questions.returns_table(curve) for curve in curves],
            *_figure("returns_curve", "Score against the number of languages in the intermediate data: measured points, "
                     f"the least-squares fit a + b ln(n), `{NONE}` at n = 0, and (dotted) the first n whose fitted gain "
                     f"per added language is below {returns_threshold:g} points.", plots.returns_curve(curves)),
        ]))
    mixtures = [m for t in summary.targets if (m := questions.mixture_comparison(summary, t)) is not None]
    if mixtures:
        sections.append(Section("English plus non-English intermediate data", [questions.mixture_table(m) for m in mixtures]))
    types = questions.intermediate_types(summary)
    if types is not None:
        sections.append(Section("Intermediate tasks by type", [questions.types_table(types, summary)]))
    from xstilts.analysis.multimodal import multimodal_blocks  # search_spaces/multimodal_nli.yaml

    if blocks := multimodal_blocks(summary):
        sections.append(Section("Multimodal targets: intermediate vs none", blocks))
    return sections


def build_sections(summary: StudySummary, compare: Sequence[StudySummary] = (),
                   returns_threshold: float = questions.DEFAULT_RETURNS_THRESHOLD,
                   study: StudyRecord | None = None) -> list[Section]:
    """The report's content, in order; rendered to HTML and Markdown alike."""
    sections = [
        Section("Main tables", [
            english_dev_table(summary),
            zero_shot_table(summary),
            *([composite] if (composite := best_per_target_table(summary)) is not None else []),
            *_figure("heatmap", "Intermediate x target: the all-language dev mean of each cell's English-dev-selected "
                     f"trial, as a difference to the `{NONE}` baseline (red: worse, blue: better).", plots.heatmap(summary)),
        ]),
    ]
    languages = Section("Per language")
    for target in summary.targets:
        languages.blocks.append(language_table(summary, target))
        gains = language_gain_table(summary, target)
        if gains is not None:
            languages.blocks.append(gains)
        languages.blocks += _figure(f"languages-{_slug(target)}", f"{target}: dev score per language of each intermediate "
                                    "task's English-dev-selected trial; dashed: majority class.", plots.language_bars(summary, target))
    sections.append(languages)
    layers = retrieval_layer_table(summary, summary.run)
    if layers is not None:
        sections.append(Section("Retrieval layers", [layers]))
    if study is not None:
        from xstilts.analysis.ranking import ranking_table, read_rankings

        ranked = ranking_table(summary, read_rankings(study))
        if ranked is not None:
            sections.append(Section("Ranking vs outcome", [ranked]))
    seeds = seed_table(summary)
    if seeds is not None:
        sections.append(Section("Seeds: differences with intervals", [seeds]))
    examples = example_table(summary, study.tracking_uri) if study is not None else None
    if examples is not None:
        sections.append(Section("Examples: differences with intervals", [examples]))
    sections += question_sections(summary, returns_threshold)
    if study is not None:  # seed question 002: alignment before/after each intermediate task (`xstilts align`)
        from xstilts.analysis.alignment import add_to_report
        add_to_report(sections, study, Section)
    sections.append(Section("Model selection: English dev vs. oracle", [selection_rules_table(summary)]))
    sections.append(Section("Search", [
        *_figure("lr_sensitivity", "English dev score against the target learning rate (log scale), per intermediate "
                 "task; hollow markers: trials stopped early by the scheduler (their last epoch).", plots.lr_sensitivity(summary)),
        *_figure("search_progress", "English dev score of each trial in start order, and the best completed trial so "
                 "far.", plots.search_progress(summary)),
    ]))
    sections.append(Section("How the study ran", [run_table(summary.run, study)]))
    if compare:
        everyone = [summary, *compare]
        sections.append(Section("Studies side by side", [
            *comparison_tables(everyone),
            *_figure("comparison", "XTREME-style score per intermediate task and study.", plots.study_comparison(everyone)),
        ]))
    return sections


def _meta(summary: StudySummary, study: StudyRecord | None, compare: Sequence[StudySummary]) -> list[tuple[str, str]]:
    rows = [("study", summary.name)]
    if study is not None:
        rows += [("MLflow parent run", study.run_id), ("status", study.status), ("tracking URI", study.tracking_uri)]
        for key in ("model", "num_samples_per_target", "search.sampler", "search.scheduler"):
            if key in study.params:
                rows.append((key, study.params[key]))
    for target in summary.targets:
        counts = summary.status_counts.get(target, {})
        rows.append((f"trials: {target}", ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items()))))
    if compare:
        rows.append(("compared with", ", ".join(s.name for s in compare)))
    rows.append(("generated", datetime.datetime.now().astimezone().isoformat(timespec="seconds")))
    return rows


def render_html(summary: StudySummary, sections: list[Section], meta: list[tuple[str, str]]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>xstilts report: {e(summary.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>xstilts report: study <code>{e(summary.name)}</code></h1>",
        "<p>Intermediate-task training (STILTs) for zero-shot cross-lingual transfer: every number below is read "
        "from the study's MLflow records. Models are selected on the English dev set (the honest zero-shot "
        "choice) unless a row says ORACLE.</p>",
        '<dl class="meta">' + "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in meta) + "</dl>",
        "<nav><ul>" + "".join(f'<li><a href="#s{n}">{e(s.title)}</a></li>' for n, s in enumerate(sections)) + "</ul></nav>",
    ]
    for n, section in enumerate(sections):
        parts.append(f'<h2 id="s{n}">{e(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(block.html())
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f'<figure id="fig-{e(block.key)}"><img alt="{e(block.caption)}" '
                             f'src="data:image/png;base64,{data}"><figcaption>{e(block.caption)}</figcaption></figure>')
            else:
                parts.append(f"<p>{e(str(block))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(summary: StudySummary, sections: list[Section], meta: list[tuple[str, str]]) -> str:
    lines = [f"# xstilts report: study `{summary.name}`", "",
             "Every number below is read from the study's MLflow records. Models are selected on the English dev "
             "set (the honest zero-shot choice) unless a row says ORACLE.", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in meta] + [""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines += [block.markdown()]
            elif isinstance(block, Figure):
                lines += [f"![{block.caption}]({block.filename})", "", f"*{block.caption}*", ""]
            else:
                lines += [str(block), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(summary: StudySummary, out_dir: str | Path, study: StudyRecord | None = None,
                 compare: Sequence[StudySummary] = (),
                 returns_threshold: float = questions.DEFAULT_RETURNS_THRESHOLD) -> ReportFiles:
    """Write report.html (self-contained), report.md + its PNGs, and summary.json into `out_dir`.
    `returns_threshold`: points per added language below which the diminishing-returns section
    calls the gain of more languages not worth it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = build_sections(summary, compare, returns_threshold, study)
    meta = _meta(summary, study, compare)
    images = []
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Figure):
                path = out / block.filename
                path.write_bytes(block.png)
                images.append(path)
    html_path, md_path, json_path = out / HTML_NAME, out / MARKDOWN_NAME, out / JSON_NAME
    html_path.write_text(render_html(summary, sections, meta), encoding="utf-8")
    md_path.write_text(render_markdown(summary, sections, meta), encoding="utf-8")
    from xstilts.analysis.multimodal import multimodal_json

    data = {"study": summary_json(summary), "questions": questions.questions_json(summary, returns_threshold),
            "multimodal": multimodal_json(summary),
            "compare": [summary_json(s) for s in compare], "run": run_json(summary.run, study)}
    json_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return ReportFiles(html_path, md_path, json_path, tuple(images))


def log_report(tracking_uri: str, run_id: str, files: ReportFiles) -> str:
    """Log the report's files to the study's parent run under `report/`; return that artifact URI."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in files.all:
        client.log_artifact(run_id, str(path), REPORT_ARTIFACT_DIR)
    return f"runs:/{run_id}/{REPORT_ARTIFACT_DIR}"
