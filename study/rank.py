"""`xstilts rank`: which intermediate tasks deserve a GPU, before phase 3 is searched.

For every (intermediate, target) pair of a study config, a transferability score
(`xstilts.tasks.transferability`), and per target the intermediates ranked by it:

- `semb` (training-free; Poth et al. 2021): the cosine similarity of the mean sentence embeddings
  of the intermediate's and the target's English training texts under the phase-1 encoder.
  `none` has no text and gets no SEmb score.
- `logme` (You et al. 2021): the evidence of the target's English training labels on the
  features of the encoder after phase 2 of that intermediate (read from the phase cache: phase 2
  is shared across targets, so this costs one phase-2 training per intermediate and no phase-3
  search); `none` is scored on the phase-1 encoder, so "no intermediate" competes too. Sentence
  labels only (classification, multiple choice: the right choice's text); tagging, QA and
  retrieval targets get no LogME score. An intermediate whose phase 2 is not in the cache yet is
  "not trained".

Features are the mean-pooled last hidden states of at most `--examples` training examples per
task (the study's seed picks them). The table is printed and logged to MLflow as a run of its
own in the study's experiment (tag xstilts.run_kind = rank; `--no-log` skips it). Starts no Ray.
"""
from __future__ import annotations

import json

DESCRIPTION = ("Score every (intermediate, target) pair of a study config for transferability (SEmb: training-free, "
               "on the phase-1 encoder; LogME: the target's labels on each cached phase-2 encoder, `none` on the "
               "phase-1 encoder) and rank the intermediates per target. Starts no Ray; logs one MLflow run.")
METHODS = ("semb", "logme")
RUN_KIND = "rank"


def add_arguments(parser) -> None:
    parser.add_argument("--method", choices=(*METHODS, "all"), default="all", help="which score(s) (default: all)")
    parser.add_argument("--examples", type=int, default=256,
                        help="training examples per task whose features are scored (default: 256)")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument("--no-log", action="store_true", help="do not log the ranking to MLflow")


def main(args) -> int:
    from xstilts.study.cli import _bad_input, _prepare_run
    from xstilts.study.config import ConfigError

    if args.examples < 2:
        return _bad_input("rank", "--examples: must be at least 2; use e.g. 256")
    try:
        study = _prepare_run(args)
    except ConfigError as error:
        return _bad_input("rank", str(error))
    methods = METHODS if args.method == "all" else (args.method,)
    scores = rank_study(study, methods, args.examples)
    print(json.dumps(scores, indent=1) if args.json else render(scores))
    if not args.no_log:
        run_id = log_ranking(study, scores)
        print(f"logged to MLflow: run {run_id} in experiment {study.config.mlflow.experiment!r}")
    return 0


# --- features ---------------------------------------------------------------------------------

def example_text(example) -> str:
    """The text of an example whose embedding stands for it (any example type of xstilts.tasks)."""
    if hasattr(example, "text_a"):
        return example.text_a if example.text_b is None else f"{example.text_a} {example.text_b}"
    if hasattr(example, "tokens"):
        return " ".join(example.tokens)
    if hasattr(example, "choices"):  # multiple choice: the context with its right choice
        return f"{example.context} {example.question or ''} {example.choices[example.label]}".strip()
    if hasattr(example, "question"):
        return f"{example.question} {example.context}"
    return str(example)


def sentence_label(task, example):
    """The label LogME reads, or None for kinds it is not defined on here (tagging, QA)."""
    from xstilts.tasks.kinds import kind_of

    name = kind_of(task).name
    if name in ("classification", "multiple_choice"):
        return example.label
    return None


def _examples(study, name: str, limit: int) -> list:
    from xstilts.tasks import DataOptions, get_task
    from xstilts.tasks.mixture import parse_source

    task_name, language = parse_source(name)
    task = get_task(task_name)
    c = study.config
    options = DataOptions(c.data_dir, limit, c.seed, c.data_files)
    return task.load("train", language or task.train_language, options)


class _Encoder:
    """One encoder's mean-pooled features, computed once per (encoder, task)."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        from xstilts.storage import to_local
        from xstilts.tasks.retrieval import load_encoder

        local = to_local(path)  # a phase-cache entry or the embedded model may be in an object store
        self.model, self.tokenizer = load_encoder(local), AutoTokenizer.from_pretrained(local)
        self.cache: dict[str, object] = {}

    def features(self, key: str, texts: list[str]):
        if key not in self.cache:
            from xstilts.tasks.retrieval import embed_sentences

            layer = self.model.config.num_hidden_layers  # the last hidden layer
            self.cache[key] = embed_sentences(self.model, self.tokenizer, texts, layer=layer).numpy()
        return self.cache[key]


# --- the ranking ------------------------------------------------------------------------------

def _phase2_encoders(study, model_path: str) -> dict[str, str | None]:
    """Intermediate -> the cached phase-2 encoder folder (at the first intermediate learning rate of
    the space), or None when it is not trained yet."""
    from xstilts.study.plan import phase2_trainings
    from xstilts.trainables.phase_cache import PhaseCache

    cache = PhaseCache(study.phase_cache_dir)
    found: dict[str, str | None] = {}
    for row in phase2_trainings(study, model_path, True):
        if row["intermediate_task"] in found and found[row["intermediate_task"]]:
            continue
        found[row["intermediate_task"]] = cache.entry_ref(row["key"]) if row["key"] and row["cached"] else None
    return found


def rank_study(study, methods=METHODS, limit: int = 256) -> dict:
    """{"targets": {target: {"scores": {method: {intermediate: score or None}}, "ranking": {method:
    [intermediates, best first]}}}, "encoders": {...}}."""
    import transformers

    from xstilts.study.runner import ensure_model
    from xstilts.tasks import NONE, get_task
    from xstilts.tasks.kinds import kind_of
    from xstilts.tasks.transferability import logme, semb_similarity

    transformers.logging.set_verbosity_error()  # a bare encoder's unused pooler is expected, not news
    c = study.config
    model_path = ensure_model(study, log=lambda *a, **k: None)
    phase1 = _Encoder(model_path)
    phase2 = _phase2_encoders(study, model_path) if "logme" in methods else {}
    encoders: dict[str, _Encoder] = {}
    result: dict = {"targets": {}, "examples": limit, "phase1": model_path,
                    "phase2": {name: path for name, path in phase2.items()}}
    texts: dict[str, list[str]] = {}

    def task_texts(name: str) -> list[str]:
        if name not in texts:
            texts[name] = [example_text(e) for e in _examples(study, name, limit)]
        return texts[name]

    for target in c.target_tasks:
        task = get_task(target)
        scores: dict[str, dict] = {method: {} for method in methods}
        # Retrieval targets have no training split (nor labels): they get no scores.
        target_examples = _examples(study, target, limit) if kind_of(task).trainable else []
        labels = [sentence_label(task, e) for e in target_examples]
        for intermediate in c.intermediate_tasks:
            if "semb" in methods:
                if intermediate == NONE or not target_examples:
                    scores["semb"][intermediate] = None
                else:
                    sources = c.intermediate_sources(intermediate)
                    inter = [t for source in sources for t in task_texts(source)]
                    scores["semb"][intermediate] = semb_similarity(
                        phase1.features(f"{intermediate}", inter),
                        phase1.features(f"target:{target}", [example_text(e) for e in target_examples]))
            if "logme" in methods:
                if not labels or any(label is None for label in labels) or len(set(labels)) < 2:
                    scores["logme"][intermediate] = None
                    continue
                path = model_path if intermediate == NONE else phase2.get(intermediate)
                if path is None:
                    scores["logme"][intermediate] = None  # phase 2 not trained yet
                    continue
                encoder = phase1 if intermediate == NONE else encoders.setdefault(path, _Encoder(path))
                features = encoder.features(f"target:{target}", [example_text(e) for e in target_examples])
                scores["logme"][intermediate] = logme(features, labels)
        ranking = {method: sorted((n for n, s in found.items() if s is not None), key=lambda n: -found[n])
                   for method, found in scores.items()}
        result["targets"][target] = {"scores": scores, "ranking": ranking}
    return result


def render(result: dict) -> str:
    lines = [f"transferability ranking ({result['examples']} examples per task; phase-1 encoder {result['phase1']})"]
    untrained = [name for name, path in result.get("phase2", {}).items() if path is None]
    if untrained:
        lines.append(f"not trained yet (no phase-2 encoder in the cache, no LogME): {', '.join(untrained)}")
    for target, found in result["targets"].items():
        lines.append(f"--- target {target} ---")
        methods = list(found["scores"])
        names = list(next(iter(found["scores"].values())))
        lines.append(f"{'intermediate':<24}" + "".join(f"{m:>12}" for m in methods))
        for name in names:
            cells = [found["scores"][m][name] for m in methods]
            lines.append(f"{name:<24}" + "".join(f"{'–' if v is None else f'{v:.4f}':>12}" for v in cells))
        for method in methods:
            lines.append(f"ranking by {method}: {' > '.join(found['ranking'][method]) or '(no scores)'}")
    return "\n".join(lines)


def log_ranking(study, result: dict) -> str:
    """One MLflow run in the study's experiment: a metric per score, the ranking as a JSON artifact."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from xstilts.mlflow_store import call_with_retry
    from xstilts.study.study_run import ensure_experiment
    from xstilts.tasks.record_schema import TAG_KIND, TAG_STUDY

    client = MlflowClient(study.tracking_uri)
    experiment_id = ensure_experiment(study.tracking_uri, study.config.mlflow.experiment, None)
    run = call_with_retry(client.create_run, experiment_id, run_name=f"{study.name}-rank",
                          tags={TAG_KIND: RUN_KIND, TAG_STUDY: study.name}, what="creating the ranking run")
    metrics = [Metric(f"rank/{method}/{target}/{name}", float(score), 0, 0)
               for target, found in result["targets"].items() for method, scores in found["scores"].items()
               for name, score in scores.items() if score is not None]
    for start in range(0, len(metrics), 900):
        call_with_retry(client.log_batch, run.info.run_id, metrics=metrics[start:start + 900],
                        tags=[RunTag("xstilts.rank_methods", ",".join(next(iter(result["targets"].values()))["scores"]))]
                        if start == 0 else [], what="logging the ranking")
    call_with_retry(client.log_text, run.info.run_id, json.dumps(result, indent=1), "ranking.json",
                    what="logging the ranking")
    call_with_retry(client.set_terminated, run.info.run_id, what="closing the ranking run")
    return run.info.run_id
