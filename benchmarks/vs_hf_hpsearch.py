"""Our study against what a user would write instead: the same STILTs search through HF
`Trainer.hyperparameter_search` (Optuna backend), run in the same invocation.

    python benchmarks/vs_hf_hpsearch.py                 # quick: 4 trials a side, 1 repeat
    python benchmarks/vs_hf_hpsearch.py --full          # 6 trials a side (the whole space), 3 repeats

The search (both sides): target synthetic_xnli on the embedded default (the tiny XLM-R built by
`ensure_embedded_model`, the same folder for both), intermediate task in {none, synthetic_mnli}
(intermediate lr 1e-3), target lr in {3e-4, 1e-3, 3e-3}; 2 intermediate epochs, 4 target
epochs, batch 32, AdamW (weight decay 0.01, clipping 1.0), linear schedule with 10 % warm-up,
seed 0, the full synthetic splits (1000 training, 300 English dev examples). Selection: the final
English dev accuracy of a trial.

- xstilts: a real study through the study code (`xstilts.study.config.parse_config` ->
  `runner.resolve` -> `run_study`: local Ray, Tune + OptunaSearch TPE + ASHA with the study's
  default search settings, Ray Train phases, the phase cache, MLflow sqlite, Optuna sqlite) in a
  temporary storage folder. Times and epochs are read back from MLflow (every epoch's metric has
  a timestamp).
- HF: `Trainer(model_init=..., ...)` + `trainer.hyperparameter_search(backend="optuna",
  hp_space=..., sampler=TPESampler(seed=0))`, as its documentation shows: the target lr is a
  `TrainingArguments` field; the intermediate task and its lr are Optuna parameters that
  `model_init(trial)` suggests (transformers 5 calls it before `hp_space`) and reads, and it trains
  phase 2 there (a second `Trainer`) before every trial that wants one, since nothing caches it.
  Pruning is HF's own: it reports each epoch's evaluation to the Optuna trial, and the study's
  default pruner (MedianPruner, from the sixth trial on) can stop it. The
  data are the project's own (`xstilts.tasks.get_task(...).load`, encoded by
  `xstilts.tasks.modeling.encode`, batched by its `collate`, scored by its `score`), so both sides
  train on the same tensors and select on the same metric.

Measured: the English-dev best each side finds; then, for the lower of the two bests (a level
both reach), the wall time from the start of the search (Ray start, model loading and encoding
included on each side) and the training epochs (phase 2 + phase 3; x 1000 examples) spent until a
trial first finished at or above it. Ratios are HF / xstilts (> 1: xstilts cheaper). The last line
is `figure: <name> <value>`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # noqa: A001 - keep the figure line last when stderr is merged

TARGET = "synthetic_xnli"
INTERMEDIATES = ("none", "synthetic_mnli")
INTERMEDIATE_LRS = (0.001,)
TARGET_LRS = (0.0003, 0.001, 0.003)


@dataclasses.dataclass(frozen=True)
class Settings:
    num_samples: int = 4  # trials per side
    intermediate_epochs: int = 2
    target_epochs: int = 4
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_train_examples: int | None = None  # None: the whole synthetic split (1000)
    max_eval_examples: int | None = None  # None: the whole dev split (300)
    seed: int = 0
    concurrent: int = 2  # xstilts: trials at once (1 CPU each); HF runs one trial at a time on every core


@dataclasses.dataclass
class SearchLog:
    """What one side did, on one clock that starts with the search: when each training epoch
    ended (phase 2 and phase 3 alike) and when each trial finished with which English dev score."""

    epochs: list[float] = dataclasses.field(default_factory=list)  # seconds at the end of each epoch
    finals: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (seconds, final English dev)
    wall: float = 0.0
    trials: int = 0
    stopped: int = 0  # trials ended early (ASHA)
    phase2_trainings: int = 0

    @property
    def best(self) -> float:
        return max((dev for _, dev in self.finals), default=float("nan"))


def reach(log: SearchLog, level: float) -> tuple[float, int]:
    """(seconds, training epochs) until a trial first finished at or above `level`; (inf, all
    epochs) when none did."""
    hits = [seconds for seconds, dev in log.finals if dev >= level - 1e-9]
    if not hits:
        return float("inf"), len(log.epochs)
    when = min(hits)
    return when, sum(1 for end in log.epochs if end <= when + 1e-6)


# ------------------------------------------------------------------------------------------
# xstilts: a real study
# ------------------------------------------------------------------------------------------

def study_config(name: str, model: str, storage: Path, s: Settings) -> dict:
    training = {"batch_size": s.batch_size, "intermediate_epochs": s.intermediate_epochs,
                "target_epochs": s.target_epochs, "warmup_ratio": s.warmup_ratio, "weight_decay": s.weight_decay,
                "max_grad_norm": s.max_grad_norm}
    if s.max_train_examples is not None:
        training["max_train_examples"] = s.max_train_examples
    if s.max_eval_examples is not None:
        training["max_eval_examples"] = s.max_eval_examples
    return {
        "name": name, "model": model, "target_tasks": [TARGET], "intermediate_tasks": list(INTERMEDIATES),
        "search_space": {"intermediate_lr": {"type": "choice", "values": list(INTERMEDIATE_LRS)},
                         "target_lr": {"type": "choice", "values": list(TARGET_LRS)}},
        "search": {"sampler": "tpe", "seed": s.seed},  # the rest: the study's defaults (ASHA, baseline first)
        "num_samples": s.num_samples, "max_concurrent_trials": s.concurrent,
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
        "training": training,
        "mlflow": {"tracking_uri": f"sqlite:///{storage / 'mlflow.db'}", "experiment": "vs-hf-hpsearch"},
        "storage_path": str(storage), "seed": s.seed,
    }


def study_log(tracking_uri: str, experiment: str, started: float) -> SearchLog:
    """The study's trials read back from MLflow: every epoch's end and every final score."""
    from mlflow.tracking import MlflowClient

    from xstilts.tasks.record_schema import EPOCH_EN_DEV, FINAL_EN_DEV, INTERMEDIATE_PREFIX, METRIC_PHASE_CACHE_HIT

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], filter_string="tags.`xstilts.run_kind` = 'trial'")
    log = SearchLog(trials=len(runs))
    for run in runs:
        # A trial whose phase 2 came from the cache shows the phase-2 metrics of the trial that
        # trained it (copied once): they are not epochs this trial trained.
        hit = run.data.metrics.get(METRIC_PHASE_CACHE_HIT) == 1.0
        for key in (EPOCH_EN_DEV,) + (() if hit else (INTERMEDIATE_PREFIX + "train_seconds",)):  # a point per epoch
            points = {m.step: m.timestamp / 1000 - started for m in client.get_metric_history(run.info.run_id, key)}
            log.epochs += points.values()
            if key != EPOCH_EN_DEV and points:
                log.phase2_trainings += 1
        final = client.get_metric_history(run.info.run_id, FINAL_EN_DEV)
        if final:
            log.finals.append((final[-1].timestamp / 1000 - started, final[-1].value))
        else:
            log.stopped += 1
    log.epochs.sort()
    log.finals.sort()
    return log


def finished_study_log(storage: Path) -> SearchLog:
    """The xstilts side of an earlier invocation (`--xstilts-from`): its clock starts at the study's
    MLflow run (after Ray's start, so slightly in the study's favour) and ends with it."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{storage / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vs-hf-hpsearch")
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.`xstilts.run_kind` = 'study'")[0]
    started = parent.info.start_time / 1000
    log = study_log(uri, "vs-hf-hpsearch", started)
    log.wall = (parent.info.end_time or parent.info.start_time) / 1000 - started
    return log


def run_xstilts(model: str, storage: Path, s: Settings, name: str) -> SearchLog:
    from xstilts.study.config import parse_config
    from xstilts.study.runner import resolve, run_study

    config = parse_config(study_config(name, model, storage, s), "benchmark config")
    study = resolve(config, name)
    started = time.time()
    run_study(study, log=lambda line: None)
    wall = time.time() - started
    log = study_log(study.tracking_uri, config.mlflow.experiment, started)
    log.wall = wall
    return log


# ------------------------------------------------------------------------------------------
# HF Trainer.hyperparameter_search, written as a user of it would
# ------------------------------------------------------------------------------------------

class FeatureDataset:
    """The project's encoded features as the dicts a Trainer dataset yields."""

    def __init__(self, features: list):
        self.rows = [{k: v for k, v in dataclasses.asdict(f).items() if v is not None} for f in features]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def task_data(task_name: str, tokenizer, s: Settings) -> tuple[object, FeatureDataset, FeatureDataset, list]:
    """(task, train, English dev, dev examples): the project's loaders and encoding, the study's
    data options (seed, caps)."""
    from xstilts.tasks import DataOptions, get_task
    from xstilts.tasks.modeling import encode

    task = get_task(task_name)
    train = task.load("train", task.train_language, DataOptions(None, s.max_train_examples, s.seed))
    dev = task.load("dev", task.train_language, DataOptions(None, s.max_eval_examples, s.seed))
    return task, FeatureDataset(encode(task, train, tokenizer)), FeatureDataset(encode(task, dev, tokenizer)), dev


def collator(pad_token_id: int):
    from xstilts.tasks.modeling import Features, collate

    return lambda rows: collate([Features(**row) for row in rows], pad_token_id)


def training_args(folder: str, learning_rate: float, epochs: int, s: Settings, evaluate: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=folder, learning_rate=learning_rate, num_train_epochs=epochs,
        per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=128,
        warmup_steps=s.warmup_ratio, weight_decay=s.weight_decay, max_grad_norm=s.max_grad_norm,
        lr_scheduler_type="linear", optim="adamw_torch", seed=s.seed,
        train_sampling_strategy="group_by_length", remove_unused_columns=False,
        eval_strategy="epoch" if evaluate else "no", save_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True,
    )


def accuracy_metric(task):
    """`compute_metrics`: the project's score of the argmax labels against the labels the Trainer
    returns with them (in its evaluation order, whatever its sampler does)."""
    from xstilts.tasks.base import PairExample
    from xstilts.tasks.modeling import score

    def compute_metrics(prediction) -> dict:
        predicted = [task.labels[i] for i in prediction.predictions.argmax(-1)]
        gold = [PairExample("", "", task.labels[i]) for i in prediction.label_ids]
        return {"accuracy": score(task, predicted, gold)[task.metric]}

    return compute_metrics


def hp_space(trial) -> dict:
    """The search space, define-by-run: phase 2's lr exists only with a phase 2."""
    intermediate = trial.suggest_categorical("intermediate_task", list(INTERMEDIATES))
    if intermediate != "none":
        trial.suggest_categorical("intermediate_lr", list(INTERMEDIATE_LRS))
    return {"learning_rate": trial.suggest_categorical("learning_rate", list(TARGET_LRS))}


def record_trial_end(log: SearchLog, at: float, last_score: float, epochs_done: float | None,
                     epochs_planned: float) -> None:
    """A target training of the HF search ended: a trial with its final score, or one Optuna pruned.
    HF reports every evaluation to the Optuna trial, and when the study's pruner (Optuna's default,
    MedianPruner, once 5 trials have finished) says so, it ends the training (on_train_end) and
    raises TrialPruned: that trial's last score is not a final one."""
    log.trials += 1
    if epochs_done is not None and epochs_done < epochs_planned:
        log.stopped += 1
    else:
        log.finals.append((at, last_score))


def run_hf(model: str, work: Path, s: Settings) -> SearchLog:
    import optuna
    from transformers import AutoTokenizer, Trainer, TrainerCallback

    from xstilts.tasks.modeling import load_model_for_task

    started = time.time()
    log = SearchLog()
    tokenizer = AutoTokenizer.from_pretrained(model)
    target, train, dev, _ = task_data(TARGET, tokenizer, s)
    intermediates = {name: task_data(name, tokenizer, s) for name in INTERMEDIATES if name != "none"}
    collate_fn = collator(tokenizer.pad_token_id)

    class Clock(TrainerCallback):
        def __init__(self, final: bool):
            self.final, self.last = final, None

        def on_epoch_end(self, args, state, control, **kwargs):
            log.epochs.append(time.time() - started)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.last = (metrics or {}).get("eval_accuracy")

        def on_train_end(self, args, state, control, **kwargs):
            if self.final:
                record_trial_end(log, time.time() - started, self.last, state.epoch, args.num_train_epochs)

    def model_init(trial=None):
        # transformers 5 calls model_init before hp_space: suggest here (Optuna returns the same
        # values when hp_space suggests them again), then read the trial's parameters.
        params = {}
        if trial is not None:
            hp_space(trial)
            params = trial.params
        encoder = model
        if params.get("intermediate_task", "none") != "none":  # phase 2, trained again for every trial
            task, train2, _, _ = intermediates[params["intermediate_task"]]
            folder = tempfile.mkdtemp(dir=work)
            phase2 = Trainer(model=load_model_for_task(task, model), train_dataset=train2, data_collator=collate_fn,
                             args=training_args(folder, params["intermediate_lr"], s.intermediate_epochs, s, False),
                             callbacks=[Clock(final=False)])
            phase2.train()
            encoder = os.path.join(folder, "encoder")
            phase2.model.base_model.save_pretrained(encoder)  # the encoder alone: phase 3 puts a fresh head on it
            tokenizer.save_pretrained(encoder)
            log.phase2_trainings += 1
        return load_model_for_task(target, encoder)

    compute_metrics = accuracy_metric(target)

    trainer = Trainer(model_init=model_init, args=training_args(str(work / "target"), 1e-3, s.target_epochs, s, True),
                      train_dataset=train, eval_dataset=dev, data_collator=collate_fn,
                      compute_metrics=compute_metrics, callbacks=[Clock(final=True)])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainer.hyperparameter_search(hp_space=hp_space, compute_objective=lambda metrics: metrics["eval_accuracy"],
                                  n_trials=s.num_samples, direction="maximize", backend="optuna",
                                  sampler=optuna.samplers.TPESampler(seed=s.seed))
    log.wall = time.time() - started
    log.finals.sort()
    return log


# ------------------------------------------------------------------------------------------

def compare(ours: SearchLog, theirs: SearchLog) -> dict:
    """The level both reach (the lower best) and what each side spent to reach it."""
    level = min(ours.best, theirs.best)
    (our_s, our_e), (their_s, their_e) = reach(ours, level), reach(theirs, level)
    return {"level": level, "ours": (our_s, our_e), "theirs": (their_s, their_e),
            "wall_ratio": their_s / our_s, "epoch_ratio": their_e / our_e}


def describe(side: str, log: SearchLog, spent: tuple[float, int], examples_per_epoch: int) -> str:
    seconds, epochs = spent
    return (f"  {side:<8} best English dev {log.best:.2f} over {log.trials} trials ({log.stopped} stopped early, "
            f"{log.phase2_trainings} phase-2 trainings, {len(log.epochs)} epochs, {log.wall:.0f} s); reached the "
            f"level after {seconds:.0f} s and {epochs} epochs ({epochs * examples_per_epoch} examples)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="6 trials a side (the whole space), 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 1; --full: 3)")
    parser.add_argument("--num-samples", type=int, default=None, help="trials per side (default 4; --full: 6)")
    parser.add_argument("--keep", help="keep the studies' storage under this folder (default: a temporary one)")
    parser.add_argument("--xstilts-from", help="take the xstilts side from a finished study's storage folder "
                        "(the <repeat>-xstilts folder of an earlier --keep) instead of running it")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The HF side trains in this process; Ray would start the study's workers 15 nice levels
    # lower, which under `nice` on a busy machine starves them: both sides at the same priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    repeats = args.repeats or (3 if args.full else 1)
    s = Settings(num_samples=args.num_samples or (6 if args.full else 4))

    from xstilts.trainables.embedded_model import ensure_embedded_model

    model = ensure_embedded_model(log=lambda line: print(f"  {line}"))
    examples = s.max_train_examples or 1000
    root = Path(args.keep or tempfile.mkdtemp(prefix="xstilts-vs-hf-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    print(f"search: {TARGET}, intermediate {{{', '.join(INTERMEDIATES)}}} x target lr {list(TARGET_LRS)}, "
          f"{s.num_samples} trials a side, {s.intermediate_epochs} + {s.target_epochs} epochs; model {model}; "
          f"{repeats} repeat(s), alternating which side goes first")
    rows = []
    try:
        for repeat in range(repeats):
            order = ("xstilts", "hf") if repeat % 2 == 0 else ("hf", "xstilts")
            logs = {}
            for side in order:
                work = root / f"{repeat + 1}-{side}"
                work.mkdir(parents=True, exist_ok=True)
                if side == "xstilts" and args.xstilts_from:
                    logs[side] = finished_study_log(Path(args.xstilts_from))
                elif side == "xstilts":
                    logs[side] = run_xstilts(model, work, s, f"vs-hf-{repeat + 1}")
                else:
                    logs[side] = run_hf(model, work, s)
            row = compare(logs["xstilts"], logs["hf"])
            rows.append(row)
            print(f"repeat {repeat + 1} ({' then '.join(order)}): level {row['level']:.2f} (the lower of the bests)")
            print(describe("xstilts", logs["xstilts"], row["ours"], examples))
            print(describe("HF", logs["hf"], row["theirs"], examples))
            print(f"  HF / xstilts to reach it: wall {row['wall_ratio']:.2f}, training epochs {row['epoch_ratio']:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    wall = statistics.median(r["wall_ratio"] for r in rows)
    epochs = statistics.median(r["epoch_ratio"] for r in rows)
    print(f"median over {len(rows)} repeat(s), HF / xstilts to reach the same English-dev best: wall {wall:.2f}, "
          f"training epochs {epochs:.2f}")
    print(f"figure: HF hyperparameter_search / xstilts wall time to the same English-dev best {wall:.2f} "
          f"(training epochs {epochs:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
