"""The study configs of the research questions (search_spaces/*.yaml) and their tiny variants
(search_spaces/tiny/*.yaml).

Every config validates (xstilts.study.config.load_config); the full-size ones are documented and meant
for a cluster (real model, GPUs, shared storage, an MLflow server); each tiny variant runs end to
end through the real CLI on the embedded model and its report shows the section of its question.

The five tiny studies share one Ray runtime (started once here, joined with `--address`) and
one storage folder, so the embedded model is built once and a phase 2 trained by one study
(synthetic_mnli, lr 1e-3) is reused by the others through the phase cache.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from xstilts.study.config import load_config
from xstilts.trainables.embedded_model import EMBEDDED_MODEL

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
QUESTIONS = ["paper", "en_plus_non_en", "nli_vs_qa_xtremer_mbert", "distant_languages", "diminishing_returns"]
FULL = sorted(SPACES.glob("*.yaml"))
TINY = sorted((SPACES / "tiny").glob("*.yaml"))


def test_every_question_has_a_full_config_and_a_tiny_variant():
    assert set(QUESTIONS) | {"embedded_default"} <= {p.stem for p in FULL}
    assert {p.stem for p in TINY} == set(QUESTIONS) | {"multimodal_nli"}  # its e2e: tests/test_multimodal_study.py


@pytest.mark.parametrize("path", FULL + TINY, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path, monkeypatch):
    monkeypatch.chdir(SPACES.parent)  # relative paths in a config are relative to the repository root
    raw = yaml.safe_load(path.read_text())
    # Configs of local data and models (mini_xtreme_real: ../shared/data, ../models/me5-small)
    # validate only where those exist: the pre-flight check refuses missing folders by design.
    for key in ("data_dir", "model"):
        value = raw.get(key)
        if isinstance(value, str) and value.startswith((".", "/")) and not (SPACES.parent / value).exists():
            pytest.skip(f"{path.name}: its {key} {value} is absent here (a clone without it beside the repository)")
    config = load_config(path)
    text = path.read_text()
    assert text.startswith("#") and config.name  # documented: a header comment first


@pytest.mark.parametrize("stem", QUESTIONS)
def test_full_config_is_a_cluster_study(stem):
    path = SPACES / f"{stem}.yaml"
    config, header = load_config(path), path.read_text().split("\nname:")[0]
    for part in ("What is varied", "How to run", "What the report shows"):
        assert part in header, f"{path.name}: the header says nothing under {part!r}"
    assert config.model in ("xlm-roberta-large", "bert-base-multilingual-cased")
    assert config.resources.use_gpu and config.max_concurrent_trials >= 2
    assert config.storage_path.startswith("s3://")  # every node reaches it
    assert config.mlflow.tracking_uri.startswith("http")  # an MLflow server, not a local file
    assert config.data_dir is None  # the HF hub (optional local data is a comment)
    assert "none" in config.intermediate_tasks and config.num_samples >= 30
    lrs = [config.search_space["target_lr"]]
    if "intermediate_lr" in config.search_space:
        lrs.append(config.search_space["intermediate_lr"])
    for spec in lrs:  # realistic fine-tuning learning rates
        values = spec.values if spec.type == "choice" else (spec.low, spec.high)
        assert all(1e-6 <= v <= 1e-4 for v in values), (stem, spec)


def test_each_full_config_asks_its_question():
    paper = load_config(SPACES / "paper.yaml")
    assert paper.target_tasks == ("xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa", "bucc2018", "tatoeba")
    assert set(paper.intermediate_tasks) == {"none", "anli_plus", "mnli", "qqp", "squad_v1", "squad_v2", "hellaswag",
                                             "cosmosqa", "commonsenseqa", "multi_task"}  # + ccg, commented: LDC data
    assert "anli_plus" in paper.mixtures["multi_task"].tasks and len(paper.mixtures["multi_task"].tasks) == 7
    assert paper.model == "xlm-roberta-large" and "retrieval_layer" in paper.search_space

    mixed = load_config(SPACES / "en_plus_non_en.yaml")
    languages = {name: {s.split("@")[1] for s in mixed.intermediate_sources(name)} for name in mixed.intermediate_tasks}
    assert languages["mnli"] == {"en"} and languages["xnli@de"] == {"de"}
    assert languages["mnli_xnli_4"] == {"en", "de", "es", "ru", "zh"}
    temperatures = {m.temperature for name, m in mixed.mixtures.items() if name.startswith("squad_tydiqa")}
    assert temperatures == {1.0, 3.0, 10.0}  # the same sources at three ratios

    mbert = load_config(SPACES / "nli_vs_qa_xtremer_mbert.yaml")
    assert mbert.model == "bert-base-multilingual-cased" and "xcopa" in mbert.target_tasks
    from xstilts.tasks import get_task

    kinds = {get_task(t).kind for t in mbert.intermediate_tasks if t != "none"}
    assert kinds == {"classification", "span_qa", "multiple_choice"}

    distant = load_config(SPACES / "distant_languages.yaml")
    assert distant.search_space["target_train"].values == ("english", "translate_train", "per_language")

    returns = load_config(SPACES / "diminishing_returns.yaml")
    counts = sorted(len({s.split("@")[1] for s in returns.intermediate_sources(n)}) for n in returns.intermediate_tasks)
    assert counts == [0, 1, 2, 3, 5, 9]  # English + 0, 1, 2, 4, 8 non-English languages


@pytest.mark.parametrize("stem", QUESTIONS)
def test_tiny_variant_is_small(stem):
    config = load_config(SPACES / "tiny" / f"{stem}.yaml")
    assert config.model == EMBEDDED_MODEL and not config.resources.use_gpu
    trained = [t for t in config.target_tasks if t != "synthetic_tatoeba"]
    assert trained == ["synthetic_xnli"] and 2 <= config.num_samples <= 4
    assert config.training.max_train_examples <= 500 and config.training.target_epochs <= 2
    assert config.search.scheduler == "fifo"  # every trial completes: the report has all its arms


def _suggestions(config) -> list[list[dict]]:
    """What each target's search will suggest, in order (its first trials are the baseline and
    then random startup samples: a fixed sequence for a fixed seed)."""
    from xstilts.study.search import make_searcher

    found = []
    for index, _ in enumerate(config.target_tasks):
        searcher, trials = make_searcher(config, index), []
        for n in range(config.num_samples):
            suggested = searcher.suggest(f"t{n}")
            trials.append({k: v for k, v in suggested.items() if k in ("intermediate_task", "target_train")})
            searcher.on_trial_complete(f"t{n}", {"en_dev_score": 50.0 + n, "target_epoch": 1})
        found.append(trials)
    return found


# The arms each tiny study must reach (the first is `none`, the baseline, by baseline_first).
TINY_ARMS = {
    "paper": [{"none", "synthetic_mnli", "synthetic_qqp"}, None],  # None: tatoeba, any
    "en_plus_non_en": [{"none", "synthetic_mnli", "mnli_en_far"}],
    "nli_vs_qa_xtremer_mbert": [{"none", "synthetic_mnli", "synthetic_squad"}],
    # the question's core: intermediate zero-shot vs direct target-language tuning (and translate-train)
    "distant_languages": [{("none", "english"), ("synthetic_mnli", "english"), ("none", "per_language"),
                           ("none", "translate_train")}],
    "diminishing_returns": [{"none", "synthetic_mnli", "nli_2_languages", "nli_4_languages"}],
}


@pytest.mark.parametrize("stem", QUESTIONS)
def test_tiny_seed_covers_every_arm(stem):
    config = load_config(SPACES / "tiny" / f"{stem}.yaml")
    for expected, trials in zip(TINY_ARMS[stem], _suggestions(config)):
        if expected is None:
            continue
        arms = {(t["intermediate_task"], t["target_train"]) if "target_train" in t else t["intermediate_task"]
                for t in trials}
        assert arms == expected, f"search.seed {config.search.seed} of tiny/{stem}.yaml suggests {trials}"


# ------------------------------------------------------------------------------------------------
# The tiny studies, end to end
# ------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cli_in_process(*args: str) -> tuple[int, str, str]:
    from xstilts.study.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_studies(tmp_path_factory):
    """Run the five tiny studies with the real CLI, one after the other, in one Ray runtime and
    one storage folder; then write each one's report. Returns (root, tracking URI, timings)."""
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("research")
    # One node, like the local runtime `xstilts run` starts: 2 CPUs, 2 trial slots; the dashboard
    # (on a free loopback port) as the runner keeps it.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"TRAIN_DRIVER": 2}, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    timings = {}
    try:
        for stem in QUESTIONS:
            started = time.time()
            result = subprocess.run(
                [sys.executable, "-m", "xstilts.study.cli", "run", "--config", str(SPACES / "tiny" / f"{stem}.yaml"),
                 "--address", cluster.address, "--name", stem],
                cwd=root, capture_output=True, text=True, timeout=900,
                env={**os.environ, "HF_HUB_OFFLINE": "1"})
            assert result.returncode == 0, stem + "\n" + result.stdout[-4000:] + result.stderr[-4000:]
            timings[stem] = time.time() - started
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    uri = f"sqlite:///{root / 'xstilts_runs' / 'mlflow.db'}"
    for stem in QUESTIONS:
        code, _, stderr = _cli_in_process("report", "--study", stem, "--out", str(root / "reports" / stem),
                                          "--tracking-uri", uri, "--no-log")
        assert code == 0, stderr
    print("tiny study seconds:", json.dumps({k: round(v) for k, v in timings.items()}))
    return root, uri, timings


def _report(root: Path, stem: str) -> tuple[str, dict]:
    folder = root / "reports" / stem
    return (folder / "report.md").read_text(), json.loads((folder / "summary.json").read_text())


def _trial_params(uri: str, study: str) -> list[dict]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xstilts")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`xstilts.study` = '{study}' and tags.`xstilts.run_kind` = 'trial'")
    assert runs and all(r.info.status == "FINISHED" for r in runs), [(r.info.status, r.data.tags.get("xstilts.error")) for r in runs]
    return [r.data.params for r in runs]


@pytest.mark.e2e
def test_tiny_paper(tiny_studies):
    root, uri, _ = tiny_studies
    md, data = _report(root, "paper")
    assert data["study"]["targets"] == ["synthetic_tatoeba", "synthetic_xnli"]
    assert data["study"]["intermediates"] == ["none", "synthetic_mnli", "synthetic_qqp"]
    assert "| none (baseline) |" in md and "XTREME-style" in md and (root / "reports" / "paper" / "heatmap.png").is_file()
    layers = {p.get("retrieval_layer") for p in _trial_params(uri, "paper") if p["target_task"] == "synthetic_tatoeba"}
    assert layers <= {"1", "2"} and layers


@pytest.mark.e2e
def test_tiny_en_plus_non_en(tiny_studies):
    root, uri, _ = tiny_studies
    params = {p["intermediate_task"]: p for p in _trial_params(uri, "en_plus_non_en")}
    mixture = params["mnli_en_far"]  # the mixture params every trial logs (the analysis reads them)
    assert mixture["intermediate_sources"] == "synthetic_mnli@en,synthetic_mnli@far"
    assert (mixture["intermediate_languages"], mixture["intermediate_num_languages"]) == ("en,far", "2")
    assert (mixture["intermediate_sampling"], float(mixture["intermediate_temperature"])) == ("temperature", 2.0)
    assert params["none"]["intermediate_num_languages"] == "0"
    md, data = _report(root, "en_plus_non_en")
    assert "## English plus non-English intermediate data" in md
    rows = {r["arm"]: r for r in data["questions"]["mixtures"]["synthetic_xnli"]["rows"]}
    assert rows["mnli_en_far"]["kind"] == "English + non-English" and rows["mnli_en_far"]["reference"] == "synthetic_mnli"
    assert rows["mnli_en_far"]["delta_reference"] == pytest.approx(
        rows["mnli_en_far"]["all_languages"] - rows["synthetic_mnli"]["all_languages"])


@pytest.mark.e2e
def test_tiny_nli_vs_qa(tiny_studies):
    root, _, _ = tiny_studies
    md, data = _report(root, "nli_vs_qa_xtremer_mbert")
    assert "## Intermediate tasks by type" in md
    types = data["questions"]["intermediate_types"]
    assert types["arms"] == {"NLI": {"synthetic_xnli": ["synthetic_mnli"]},
                             "extractive QA": {"synthetic_xnli": ["synthetic_squad"]}}
    gains = {k: round(v["synthetic_xnli"], 2) for k, v in types["gains"].items()}
    top = max(gains.values())
    expected = ("none (no type beats none)" if top <= 0 else "tie (NLI, extractive QA)" if len(set(gains.values())) == 1
                else max(gains, key=gains.get))
    assert types["best_type"] == {"synthetic_xnli": expected}
    cells = data["study"]["cells"]
    assert types["gains"]["extractive QA"]["synthetic_xnli"] == pytest.approx(
        cells["synthetic_squad"]["synthetic_xnli"]["all_languages_selected_delta_vs_none"])
    # one seed per arm: the NLI-vs-QA answer is stated as measured, never as a finding
    assert "as measured; not resolved at this budget (one seed per configuration" in types["conclusion"]["synthetic_xnli"]
    # every trial logged its dev examples' statistics: each arm's difference has an interval over them
    section = md.split("## Examples: differences with intervals", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| synthetic_")]
    assert {row.split(" | ")[0].strip("| ") for row in rows} == {"synthetic_mnli", "synthetic_squad"}
    for row in rows:
        delta, interval = row.split(" | ")[3:5]
        low, high = (float(x) for x in interval.strip("[]").split(", "))
        assert low <= float(delta) <= high
    # the per-example statistics reproduce the logged scores: the point is the main table's delta
    mnli = next(row for row in rows if row.startswith("| synthetic_mnli"))
    assert float(mnli.split(" | ")[3]) == pytest.approx(
        cells["synthetic_mnli"]["synthetic_xnli"]["all_languages_selected_delta_vs_none"], abs=0.01)


@pytest.mark.e2e
def test_tiny_distant_languages(tiny_studies):
    root, uri, _ = tiny_studies
    params = _trial_params(uri, "distant_languages")
    assert {p["target_train"] for p in params} == {"english", "translate_train", "per_language"}
    md, data = _report(root, "distant_languages")
    assert "## Gains by language family and distance from English" in md
    assert (root / "reports" / "distant_languages" / "distance-gains-synthetic_xnli.png").is_file()
    family = data["questions"]["family_gains"]["synthetic_xnli"]
    assert set(family["arms"]) == {"synthetic_mnli", "none [translate_train]", "none [per_language]"}
    groups = {g["group"]: g for g in family["groups"] if g["grouping"] == "distance"}
    assert [groups[b]["languages"] for b in ("source", "close", "medium", "distant")] == [["en"], ["near"], ["mid"], ["far"]]
    per_language = family["per_language"]["none [translate_train]"]
    assert groups["distant"]["gains"]["none [translate_train]"] == pytest.approx(per_language["far"])
    # per_language: one phase-3 model per synthetic language, each scored on its own language
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("xstilts").experiment_id],
                                "params.target_train = 'per_language' and tags.`xstilts.study` = 'distant_languages'")
    checkpoints = json.loads(run.data.tags["xstilts.checkpoints_by_language"])
    assert sorted(checkpoints) == ["en", "far", "mid", "near"] and len(set(checkpoints.values())) == 4
    assert run.data.tags["xstilts.checkpoint"] == checkpoints["en"]
    scores = {lang: run.data.metrics[f"final/dev/{lang}/accuracy"] for lang in checkpoints}
    assert run.data.metrics["final/all_languages_mean"] == pytest.approx(sum(scores.values()) / 4)
    assert run.data.metrics["final/en_dev_score"] == pytest.approx(scores["en"])


@pytest.mark.e2e
def test_tiny_diminishing_returns(tiny_studies):
    root, _, timings = tiny_studies
    md, data = _report(root, "diminishing_returns")
    assert "## Diminishing returns: languages in the intermediate data" in md
    assert (root / "reports" / "diminishing_returns" / "returns_curve.png").stat().st_size > 5_000
    (curve,) = data["questions"]["returns"]
    assert [p["n"] for p in curve["points"]] == [1, 2, 4] and curve["threshold"] == 0.5
    import numpy as np

    b, a = np.polyfit(np.log([1, 2, 4]), [p["score"] for p in curve["points"]], 1)
    assert (curve["fit"]["a"], curve["fit"]["b"]) == (pytest.approx(a), pytest.approx(b))
    cells = data["study"]["cells"]
    assert curve["points"][2]["score"] == pytest.approx(cells["nli_4_languages"]["synthetic_xnli"]["all_languages_selected"])
