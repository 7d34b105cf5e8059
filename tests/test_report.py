"""`xstilts report` and `xstilts analyze --table` on MLflow records written by hand (the names a
trial is recorded under, tasks/record_schema.py): no Ray. The HTML report is opened in a real
headless browser when one is installed (Debian: `apt-get install -y chromium`), else that test
is skipped."""
from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
import tempfile

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from xstilts.analysis import plots
from xstilts.analysis.records import find_study, iter_trials
from xstilts.analysis.tables import summarize
from xstilts.tasks.record_schema import (TAG_CHECKPOINT, TAG_INTERMEDIATE, TAG_KIND, TAG_PARENT, TAG_SELECTION_METRIC,
                                 TAG_STUDY, TAG_TARGET, TAG_TRIAL_ID)
from cli_in_process import cli

TARGETS = {"synthetic_xnli": "accuracy", "synthetic_panx": "f1"}
INTERMEDIATES = ["none", "synthetic_mnli", "synthetic_qqp"]
LANGUAGES = ["en", "near", "mid", "far"]


def _write_study(client: MlflowClient, experiment_id: str, name: str, seed: int, trials_per_cell: int = 3) -> str:
    """A finished study as the runner + trainables record it: a parent run, nested trial runs."""
    rng = random.Random(seed)
    parent = client.create_run(experiment_id, run_name=name, tags={TAG_KIND: "study", TAG_STUDY: name}, start_time=1_000)
    parent_id = parent.info.run_id
    client.log_batch(parent_id, params=[Param("model", "embedded:tiny-xlmr"), Param("num_samples_per_target", "9")])
    n = 0
    for target, metric in TARGETS.items():
        for intermediate in INTERMEDIATES:
            for k in range(trials_per_cell):
                n += 1
                gain = {"none": 0, "synthetic_mnli": 6, "synthetic_qqp": -2}[intermediate]
                base = 60 + gain + rng.uniform(-4, 4)
                scores = {"en": base + 20, "near": base + 8, "mid": base - 2, "far": base - 18}
                stopped = intermediate == "synthetic_qqp" and k == trials_per_cell - 1
                tags = {TAG_PARENT: parent_id, TAG_KIND: "trial", TAG_TRIAL_ID: f"{target[10:]}_{n:05d}", TAG_STUDY: name,
                        TAG_TARGET: target, TAG_INTERMEDIATE: intermediate, TAG_SELECTION_METRIC: metric}
                run = client.create_run(experiment_id, run_name=f"{target}-{intermediate}-{n}", tags=tags,
                                        start_time=2_000 + 1_000 * (n + 7 * k))  # not in creation order
                params = {"target_task": target, "intermediate_task": intermediate, "target_lr": 10 ** rng.uniform(-3.5, -2.5),
                          "intermediate_lr": 0.001, "seed": 0}
                metrics = [Metric("en_dev_score", scores["en"] - 5, 0, 1), Metric("en_dev_score", scores["en"] - 2, 0, 2)]
                if not stopped:
                    metrics.append(Metric("en_dev_score", scores["en"], 0, 3))
                    for lang, value in scores.items():
                        metrics += [Metric(f"final/dev/{lang}/{metric}", value, 0, 3),
                                    Metric(f"final/chance/{lang}/{metric}", 33.3, 0, 3)]
                    metrics += [Metric("final/en_dev_score", scores["en"], 0, 3),
                                Metric("final/all_languages_mean", sum(scores.values()) / 4, 0, 3),
                                Metric("final/zero_shot_mean", (scores["near"] + scores["mid"] + scores["far"]) / 3, 0, 3)]
                client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                                 tags=[] if stopped else [RunTag(TAG_CHECKPOINT, f"/nowhere/{n}")])
                client.set_terminated(run.info.run_id, status="KILLED" if stopped else "FINISHED")
    client.set_terminated(parent_id, status="FINISHED")
    return parent_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("xstilts", artifact_location=(root / "artifacts").as_uri())
    parents = {name: _write_study(client, experiment_id, name, seed) for seed, name in enumerate(["study-a", "study-b"])}
    return root, uri, parents




@pytest.fixture(scope="module")
def report(store):
    root, uri, parents = store
    out = root / "report-a"
    code, stdout, stderr = cli("report", "--study", "study-a", "--out", str(out), "--tracking-uri", uri, "--compare", "study-b")
    assert code == 0, stderr
    return out, stdout


def test_report_files(report):
    out, stdout = report
    names = {p.name for p in out.iterdir()}
    assert {"report.html", "report.md", "summary.json", "heatmap.png", "languages-synthetic_xnli.png",
            "languages-synthetic_panx.png", "lr_sensitivity.png", "search_progress.png", "comparison.png"} <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert "report.html" in stdout and "logged to MLflow run" in stdout


def test_markdown_report_links_its_pngs(report):
    out, _ = report
    md = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == 6 and all((out / image).is_file() for image in images)
    assert "| none (baseline) |" in md and "XTREME-style" in md and "ORACLE" in md
    assert "Studies side by side" in md and "study-b" in md


def test_html_report_is_self_contained(report):
    out, _ = report
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources:
        assert base64.b64decode(source.split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r'(src|href)="(https?:|file:|//)', page)  # nothing to fetch
    assert page.count("<table>") == 11  # 3 main (with best per target) + 2 x (languages + gains) + selection + how it ran + 2 comparison
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"]["study"] == "study-a" and summary["compare"][0]["study"] == "study-b"


def test_report_logged_to_the_study_parent_run(store, report):
    _, uri, parents = store
    client = MlflowClient(uri)
    logged = {os.path.basename(f.path) for f in client.list_artifacts(parents["study-a"], "report")}
    assert {"report.html", "report.md", "summary.json", "heatmap.png"} <= logged
    assert not client.list_artifacts(parents["study-b"], "report")  # compared, not reported


def test_report_numbers_match_the_records(store, report):
    _, uri, _ = store
    out, _ = report
    data = json.loads((out / "summary.json").read_text())["study"]
    record = find_study(uri, "xstilts", "study-a")
    trials = list(iter_trials(record))
    assert len(trials) == 18
    for target in TARGETS:
        for intermediate in INTERMEDIATES:
            done = [t for t in trials if t.target_task == target and t.intermediate_task == intermediate and t.completed]
            cell = data["cells"][intermediate][target]
            assert cell["completed"] == len(done) and cell["trials"] == 3
            assert cell["en_dev"]["best"] == pytest.approx(max(t.en_dev_score for t in done))
            assert cell["selected"]["run_id"] == max(done, key=lambda t: t.en_dev_score).run_id
    # start order comes from the MLflow run start times
    assert all(t.start_time is not None for t in trials)


def test_analyze_table_text_and_json(store):
    _, uri, _ = store
    code, stdout, _ = cli("analyze", "--study", "study-a", "--tracking-uri", uri, "--table")
    assert code == 0
    assert "Main table: English dev selection metric" in stdout and "none (baseline)" in stdout
    assert "ORACLE: all-language dev" in stdout and "gain over the `none` baseline" in stdout
    code, stdout, _ = cli("analyze", "--study", "study-a", "--tracking-uri", uri, "--table", "--json", "--compare", "study-b")
    assert code == 0
    data = json.loads(stdout)
    assert data["study"]["intermediates"] == INTERMEDIATES and data["compare"][0]["study"] == "study-b"
    assert set(data["study"]["xtreme_style"]) == set(INTERMEDIATES)


def test_report_bad_input(store, tmp_path):
    _, uri, _ = store
    code, _, stderr = cli("report", "--study", "nope", "--out", str(tmp_path / "r"), "--tracking-uri", uri)
    assert code == 2 and "nope" in stderr and not (tmp_path / "r").exists()
    code, _, stderr = cli("report", "--study", "study-a", "--out", str(tmp_path / "r"), "--tracking-uri", uri, "--compare", "gone")
    assert code == 2 and "gone" in stderr
    (tmp_path / "file").write_text("x")
    code, _, stderr = cli("report", "--study", "study-a", "--out", str(tmp_path / "file"), "--tracking-uri", uri)
    assert code == 2 and "not a folder" in stderr
    code, _, stderr = cli("report", "--out", str(tmp_path / "r"), "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "no MLflow store" in stderr


def test_plots_skip_what_is_not_there():
    empty = summarize([])
    assert plots.heatmap(empty) is None and plots.lr_sensitivity(empty) is None
    assert plots.search_progress(empty) is None and plots.language_bars(empty, "synthetic_xnli") is None
    assert plots.study_comparison([empty]) is None


# ------------------------------------------------------------------------------------------------
# A real browser
# ------------------------------------------------------------------------------------------------

def _chromium() -> str | None:
    for name in (os.environ.get("XSTILTS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--virtual-time-budget=5000"]

# Appended to a copy of the report (the report itself has no script): after load, writes what the
# browser shows into the DOM, so that --dump-dom can tell.
_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width]);
  const tables = [...document.querySelectorAll("table")].map(t => [t.rows.length, t.getBoundingClientRect().height]);
  const probe = document.createElement("pre"); probe.id = "probe";
  probe.textContent = JSON.stringify({images, tables}); document.body.appendChild(probe);
});
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary found (Debian: apt-get install -y chromium; "
                                                "or set XSTILTS_CHROMIUM): the HTML report is not checked in a browser")
def test_html_report_renders_in_headless_chromium(report, tmp_path):
    out, _ = report
    probe_page = tmp_path / "probe.html"
    probe_page.write_text((out / "report.html").read_text().replace("</body>", _PROBE + "</body>"))
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    base = [_chromium(), *_FLAGS, f"--user-data-dir={profile}"]

    dom = subprocess.run(base + ["--dump-dom", probe_page.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "none (baseline)" in dom.stdout and "synthetic_mnli" in dom.stdout and "ORACLE: all-language dev" in dom.stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the probe script did not run"
    seen = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(seen["images"]) == 6
    for complete, width, height, shown_width in seen["images"]:  # decoded, with pixels, laid out
        assert complete and width > 100 and height > 100 and shown_width > 100
    assert len(seen["tables"]) == 11 and all(rows >= 2 and height > 20 for rows, height in seen["tables"])

    shot = tmp_path / "shot.png"
    result = subprocess.run(base + ["--window-size=1280,3000", f"--screenshot={shot}", (out / "report.html").as_uri()],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 3000)
    small = image.resize((128, 300))
    pixels = list(small.getdata())
    not_white = sum(1 for p in pixels if sum(p) < 720) / len(pixels)
    assert not_white > 0.05, f"screenshot looks blank ({not_white:.1%} non-white)"
    assert len(set(pixels)) > 50  # text, tables and coloured plots, not a flat page
