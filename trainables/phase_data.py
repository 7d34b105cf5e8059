"""The data of one training phase: what it trains on (sources: "task@lang" training splits,
encoded through the feature cache), what it validates on (English dev sets, or a subset held out
of a task's training split when it has none), and the optional MLM corpus. Built by one plain
function, `load_phase_data`, usable without Ray."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from xstilts.tasks import DataOptions, get_task
from xstilts.tasks.base import TaskDataError
from xstilts.tasks.mixture import parse_source, source_name
from xstilts.tasks.modeling import evaluate, evaluate_with_stats, majority_baseline
from xstilts.tasks.record_schema import final_chance, final_dev, summarize_final
from xstilts.trainables.config import PhaseConfig
from xstilts.trainables.feature_cache import cached_encode
from xstilts.trainables.multitask import encode_mlm_corpus, load_mlm_corpus


class DevSet:
    """One dev split: examples (for scoring) and features (encoded once, through the cache).

    `examples`/`split` given: a validation subset held out of the training split (a task with no
    English dev split); `split` then names it in the feature cache key."""

    def __init__(self, task, language: str, options: DataOptions, tokenizer, cfg: PhaseConfig,
                 examples: list | None = None, split: str = "dev"):
        self.language = language
        self.held_out = examples is not None
        self.examples = examples if examples is not None else task.load("dev", language, options)
        self.features, _ = cached_encode(cfg.feature_cache_dir, task, split, language, options, tokenizer,
                                         cfg.tokenizer_path, cfg.training.max_length, self.examples)

    def score(self, task, model, tokenizer, cfg: PhaseConfig, device) -> dict[str, float]:
        opts = cfg.training  # every epoch: the scores only
        return evaluate(task, model, tokenizer, self.examples, opts.eval_batch_size, device, opts.max_length,
                        language=self.language, features=self.features)

    def score_with_stats(self, task, model, tokenizer, cfg: PhaseConfig, device):
        """(scores, per-example (numerator, denominator) of the selection metric, or None)."""
        opts = cfg.training
        return evaluate_with_stats(task, model, tokenizer, self.examples, opts.eval_batch_size, device, opts.max_length,
                                   language=self.language, features=self.features)


class Source:
    """One training split of a phase: a task in one language, encoded through the feature cache.

    With `holdout > 0` the last `holdout` examples are kept out of training and become the
    task's English validation subset (`self.held_out`): for tasks with no English dev split."""

    def __init__(self, task, language: str, options: DataOptions, tokenizer, cfg: PhaseConfig, holdout: int = 0):
        self.task, self.language = task, language
        self.name = source_name(task.name, language)
        self.held_out: list | None = None
        self._examples: list | None = None
        self._options = options
        split = "train"
        if holdout:
            everything = self.examples()
            holdout = min(holdout, len(everything) - 1)
            self._examples, self.held_out = everything[:-holdout], everything[-holdout:]
            split = f"train[:-{holdout}]"  # a different cache entry than the whole split
        self.features, self.cache_hit = cached_encode(cfg.feature_cache_dir, task, split, language, options,
                                                      tokenizer, cfg.tokenizer_path, cfg.training.max_length,
                                                      self.examples)

    def examples(self) -> list:  # loaded only on a feature-cache miss, a holdout, or the majority baseline
        if self._examples is None:
            self._examples = self.task.load("train", self.language, self._options)
        return self._examples


def holdout_size(task, language: str, options: DataOptions, eval_options: DataOptions, cfg: PhaseConfig) -> int:
    """How many training examples of (task, language) hold out as the task's English validation
    subset: none when the task has an English dev split of its own. A dev split that is the very
    file the task trains on (a sample that only has a dev set, mapped as training data) does not
    count: scores on it would be scores on training examples."""
    if task.has_data("dev", task.train_language, eval_options) and not dev_is_train(task, options, eval_options):
        return 0
    total = len(task.load("train", language, options))
    size = max(1, int(total * cfg.training.holdout_fraction))
    return min(size, cfg.training.eval_cap(task.name) or size, max(0, total - 1))


def dev_is_train(task, options: DataOptions, eval_options: DataOptions) -> bool:
    if task.locate is None or (options.data_dir is None and not options.files):
        return False  # generated, or the hub's own splits
    try:
        train = task.locate("train", task.train_language, options)
        dev = task.locate("dev", task.train_language, eval_options)
    except TaskDataError:
        return False
    return bool(set(map(os.path.realpath, train)) & set(map(os.path.realpath, dev)))


@dataclass
class PhaseData:
    """Everything a phase reads, loaded once per worker."""

    tasks: dict  # task name -> TaskSpec (one head each)
    task: object  # the task whose English dev reports the selection metric (a mixture: its first)
    sources: list[Source]
    dev_sets: dict[str, DevSet] = field(default_factory=dict)  # rank 0 only: task name -> its English dev
    mlm_features: list[list[int]] = field(default_factory=list)
    eval_options: dict = field(default_factory=dict)  # task name -> DataOptions of its evaluation splits
    with_mlm: bool = False  # phase 2 with an MLM auxiliary loss
    mlm_weight: float = 0.0  # its weight (the mixture's own, else training.mlm_weight)

    @property
    def multi(self) -> bool:
        """One head per task on a shared encoder (several tasks, or an MLM auxiliary loss)."""
        return len(self.tasks) > 1 or self.with_mlm

    def train_examples(self) -> list:
        """The reporting task's English training examples (its majority baseline), loaded on demand."""
        english = {s.task.name: s for s in self.sources if s.language == s.task.train_language}
        source = english.get(self.task.name) or next(s for s in self.sources if s.task is self.task)
        return source.examples()


def train_cap(cfg: PhaseConfig) -> int | None:
    """The phase's uniform cap on training examples (phase 2 may have its own)."""
    opts = cfg.training
    if cfg.phase == "intermediate" and opts.intermediate_max_train_examples is not None:
        return opts.intermediate_max_train_examples
    return opts.max_train_examples


def load_phase_data(cfg: PhaseConfig, tokenizer, rank: int = 0) -> PhaseData:
    opts = cfg.training
    by_task = opts.max_train_examples_by_task or {}
    train_options = {}
    tasks: dict[str, object] = {}
    source_specs: list[tuple[str, str]] = []
    for spec in cfg.sources:
        name, language = parse_source(spec)
        if name not in tasks:
            train_options[name] = cfg.data_options(by_task.get(name, train_cap(cfg)))
            tasks[name] = get_task(name).resolved(train_options[name])  # CCG: labels from the data
        source_specs.append((name, language or tasks[name].train_language))
    eval_options = {name: cfg.data_options(opts.eval_cap(name)) for name in tasks}
    task = tasks.get(parse_source(cfg.task)[0]) or next(iter(tasks.values()))
    # A task without an English dev split validates on a subset held out of one of its sources:
    # the English one when the phase trains on it, else its first.
    holdout_language = {}
    for name, language in source_specs:
        if name not in holdout_language or language == tasks[name].train_language:
            holdout_language[name] = language
    holdouts = {name: holdout_size(t, holdout_language[name], train_options[name], eval_options[name], cfg)
                for name, t in tasks.items()}
    sources = [Source(tasks[name], language, train_options[name], tokenizer, cfg,
                      holdouts[name] if language == holdout_language[name] else 0)
               for name, language in source_specs]
    data = PhaseData(tasks, task, sources, eval_options=eval_options)
    data.mlm_weight = cfg.mixture.mlm_weight_or(opts.mlm_weight) if cfg.mixture else opts.mlm_weight
    data.with_mlm = cfg.phase == "intermediate" and data.mlm_weight > 0
    if data.with_mlm:
        lines = load_mlm_corpus(opts.mlm_corpus or "synthetic", train_cap(cfg), cfg.seed)
        data.mlm_features = encode_mlm_corpus(lines, tokenizer, opts.max_length or task.max_length)
    if rank == 0:
        held = {s.task.name: s for s in sources if s.held_out is not None}
        for name, t in tasks.items():
            if name in held:
                data.dev_sets[name] = DevSet(t, held[name].language, eval_options[name], tokenizer, cfg,
                                             examples=held[name].held_out, split=f"train[-{len(held[name].held_out)}:]")
            else:
                data.dev_sets[name] = DevSet(t, t.train_language, eval_options[name], tokenizer, cfg)
    return data


def zero_shot(task, model, tokenizer, cfg: PhaseConfig, options: DataOptions, train_examples, device,
               dev_en: DevSet | None = None, stats_out: dict | None = None) -> dict[str, float]:
    """Every language of the target, scored with the shared metrics, plus the majority-class score.
    `stats_out`: filled with {language: per-example (numerator, denominator)} of the selection
    metric where it decomposes (what the report's intervals over examples resample)."""
    results: dict[str, float] = {}
    train = train_examples() if callable(train_examples) else train_examples
    # Languages with no local evaluation file (a partial copy of a benchmark) are left out, and
    # every average below is over the languages that were scored.
    languages = [l for l in task.languages if l == task.train_language or task.has_data("dev", l, options)]
    for language in languages:
        dev = dev_en if dev_en is not None and language == task.train_language else DevSet(task, language, options, tokenizer, cfg)
        scores, stats = dev.score_with_stats(task, model, tokenizer, cfg, device)
        for name, value in scores.items():
            results[final_dev(language, name)] = value
        if stats_out is not None and stats is not None:
            stats_out[language] = stats
        results[final_chance(language, task.metric)] = majority_baseline(task, train, dev.examples, language)[task.metric]
    results.update(summarize_final({l: results[final_dev(l, task.metric)] for l in languages}, task.train_language))
    return results
