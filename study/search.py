"""The Tune search for one target task: OptunaSearch over a conditional (define-by-run) space,
and the early-stopping scheduler."""
from __future__ import annotations

from dataclasses import dataclass

from xstilts.search_spaces.dimensions import DIMENSIONS
from xstilts.study.config import ParamSpec, StudyConfig
from xstilts.tasks import NONE, get_task
from xstilts.tasks.record_schema import EPOCH_EN_DEV, FINAL_EN_DEV, TARGET_EPOCH
from xstilts.tasks.kinds import kind_of

SELECTION_METRIC = EPOCH_EN_DEV  # reported by phase 3 every epoch: the English dev metric
TIME_ATTR = TARGET_EPOCH  # our own epoch counter: training_iteration restarts after a Train retry


def _suggest(trial, name: str, spec: ParamSpec) -> float:
    if spec.type == "choice":
        return trial.suggest_categorical(name, list(spec.values))
    return trial.suggest_float(name, spec.low, spec.high, log=spec.type == "loguniform")


@dataclass(frozen=True)
class DefineSpace:
    """Optuna define-by-run space: phase 2's learning rate exists only when there is a phase 2.

    A class (not a closure) so Tune can pickle the searcher when it saves the study for resume.
    """

    intermediate_tasks: tuple[str, ...]
    search_space: dict
    retrieval_target: bool = False  # no phase 3: the layer is searched instead of target_lr

    def __call__(self, trial):
        constants = {}
        intermediate = trial.suggest_categorical("intermediate_task", list(self.intermediate_tasks))
        for dimension in DIMENSIONS.values():  # in the table's order: the seeded draws depend on it
            if not dimension.applies(intermediate, self.retrieval_target):
                if dimension.absent is not None:
                    constants[dimension.name] = dimension.absent
            elif dimension.name in self.search_space:
                _suggest(trial, dimension.name, self.search_space[dimension.name])
        return constants or None


def _middle(spec: ParamSpec, preferred=None) -> float:
    """A central value of a dimension: its preferred value when allowed, the middle choice, or the
    (geometric) midpoint."""
    if preferred is not None and preferred in spec.values:
        return preferred
    if spec.type == "choice":
        return spec.values[len(spec.values) // 2]
    if spec.type == "loguniform":
        return (spec.low * spec.high) ** 0.5
    return (spec.low + spec.high) / 2


_SEARCH_CLASS = None


def _optuna_search_class():
    """OptunaSearch that records early-stopped trials as pruned, and lets a trial it already
    closed as failed come back quietly.

    `xstilts resume` retries errored trials under their trial ids (xstilts.study.runner): OptunaSearch
    then gets results of a trial its Optuna study already holds as FAIL, and would warn on every
    one. They are skipped: a closed Optuna trial takes no more reports, so a retried trial's
    outcome is in MLflow and Tune's results but does not inform the sampler. (Defined lazily:
    Ray is imported only when a study runs; module-level once defined, so Tune can pickle it.)
    """
    global _SEARCH_CLASS
    if _SEARCH_CLASS is None:
        from ray.tune.search.optuna import OptunaSearch

        class RetryTolerantOptunaSearch(OptunaSearch):
            def on_trial_result(self, trial_id: str, result: dict):
                if trial_id in self._completed_trials:
                    return
                import optuna

                try:
                    super().on_trial_result(trial_id, result)
                except optuna.exceptions.UpdateFinishedTrialError:
                    # The Optuna study (kept in its storage) is ahead of Tune's snapshot of this
                    # searcher: the trial finished after the snapshot and before the driver died,
                    # and a resumed study runs it again. Optuna already has its outcome.
                    self._completed_trials.add(trial_id)

            def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
                # A trial the scheduler stopped early ends without its final metrics. OptunaSearch
                # would tell its last (early-epoch) score as COMPLETE, the same as a score after
                # every epoch; told PRUNED, Optuna keeps that score as the trial's value and TPE
                # ranks it below trials that ran to the end (Optuna's own pruners do the same).
                stopped = (not error and result is not None and FINAL_EN_DEV not in result
                           and trial_id in self._ot_trials and trial_id not in self._completed_trials
                           and getattr(self, "tell_stopped_as", "pruned") == "pruned")
                if not stopped:
                    return super().on_trial_complete(trial_id, result, error)
                import optuna

                try:
                    self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
                except Exception as exc:  # noqa: BLE001 - as OptunaSearch: a rejected tell is not fatal
                    import logging

                    logging.getLogger(__name__).warning("Optuna refused the pruned trial %s: %s", trial_id, exc)
                self._completed_trials.add(trial_id)

        RetryTolerantOptunaSearch.__module__, RetryTolerantOptunaSearch.__qualname__ = __name__, "RetryTolerantOptunaSearch"
        globals()["RetryTolerantOptunaSearch"] = _SEARCH_CLASS = RetryTolerantOptunaSearch
    return _SEARCH_CLASS


def grid_points(config: StudyConfig, target_index: int, intermediates: tuple[str, ...] | None = None) -> list[dict]:
    """Every point of the search space (all its dimensions are `choice`s) that applies to the
    target: each intermediate task with every combination of the dimensions its phases have."""
    import itertools

    retrieval = not kind_of(get_task(config.target_tasks[target_index])).trainable
    points = []
    for intermediate in intermediates or config.intermediate_tasks:
        names = [d.name for d in DIMENSIONS.values()
                 if d.applies(intermediate, retrieval) and d.name in config.search_space]
        for values in itertools.product(*(config.search_space[name].values for name in names)):
            points.append({"intermediate_task": intermediate, **dict(zip(names, values))})
    return points


def trials_per_target(config: StudyConfig, target_index: int, intermediates: tuple[str, ...] | None = None) -> int:
    """Tune's num_samples for one target: the grid's size or num_samples, times the seeds."""
    configurations = len(grid_points(config, target_index, intermediates)) if config.search.sampler == "grid" \
        else config.num_samples
    return configurations * config.seeds


def prune_intermediates(ranking: list[str], keep: int, listed: tuple[str, ...]) -> tuple[str, ...]:
    """`none` (when listed) and the best `keep` ranked intermediates, in rank order; an
    intermediate the ranking could not score is kept after them only when fewer than `keep` were
    scored (so an unscored task is never silently dropped for lack of a score)."""
    ranked = [name for name in ranking if name in listed and name != NONE][:keep]
    unscored = [name for name in listed if name != NONE and name not in ranking]
    ranked += unscored[:max(0, keep - len(ranked))]
    return ((NONE,) if NONE in listed else ()) + tuple(ranked)


def repeat_seeds(searcher, seeds: int):
    """Each proposed configuration trained `seeds` times (Tune's Repeater: the repeats get
    `__trial_index__` 0..seeds-1, which the trial adds to its seed; the searcher sees their mean,
    as a completed trial only when every seed completed: xstilts.study.seed_groups)."""
    if seeds <= 1:
        return searcher
    from xstilts.study.seed_groups import SeedRepeater

    return SeedRepeater(searcher, repeat=seeds, time_attr=TIME_ATTR)


def make_searcher(config: StudyConfig, target_index: int, storage_url: str | None = None, study_name: str | None = None,
                  intermediates: tuple[str, ...] | None = None):
    """OptunaSearch for one target; with `storage_url`, its Optuna study is kept there under
    `study_name` (open it with `optuna-dashboard URL`; a resumed study goes on in it).
    `intermediates`: this target's choices, in the order their fixed points go first (a ranking's
    pruned list); None: the config's."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    intermediates = tuple(intermediates or config.intermediate_tasks)
    seed = config.search.seed + target_index  # each target has its own, reproducible sampler
    if config.search.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(config.search.startup_trials, config.num_samples))
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    retrieval = not kind_of(get_task(config.target_tasks[target_index])).trainable

    def point_for(intermediate: str) -> dict:
        # The dimensions that apply, at their preferred or central values (target_train:
        # english, the zero-shot setting proper, when it is allowed).
        point = {"intermediate_task": intermediate}
        for dimension in DIMENSIONS.values():
            if dimension.applies(intermediate, retrieval) and dimension.name in config.search_space:
                point[dimension.name] = _middle(config.search_space[dimension.name], dimension.preferred)
        return point

    points = []
    if config.search.sampler == "grid":  # every point of the grid, once, in order
        points = grid_points(config, target_index, intermediates)
    elif config.search.baseline_first and NONE in intermediates:
        points.append(point_for(NONE))
    if config.search.sampler != "grid" and (config.search.each_intermediate_first or config.search.intermediates):
        points += [point_for(name) for name in intermediates if name != NONE]  # a ranking: best first
    space = DefineSpace(intermediates, dict(config.search_space), retrieval)
    storage = None
    if storage_url:
        if storage_url.startswith("sqlite:"):
            from pathlib import Path

            Path(storage_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(storage_url)
    searcher = _optuna_search_class()(space=space, sampler=sampler, storage=storage, study_name=study_name,
                                      metric=SELECTION_METRIC, mode="max", points_to_evaluate=points or None)
    searcher.tell_stopped_as = config.search.tell_stopped_as
    return ConcurrencyLimiter(searcher, max_concurrent=config.max_concurrent_trials)


def make_scheduler(config: StudyConfig):
    from ray.tune.schedulers import FIFOScheduler

    if config.search.scheduler == "fifo":
        return FIFOScheduler()
    from xstilts.study.asha import GroupASHA

    # Seed groups (seeds > 1) are judged on their seeds' mean and stopped together; a trial on its
    # last epoch is never stopped: it still has to log its zero-shot results and checkpoint.
    return GroupASHA(TIME_ATTR, SELECTION_METRIC, "max", config.training.target_epochs, config.search.grace_period,
                     config.search.reduction_factor, config.seeds, config.search.decide_on_seeds)


def __getattr__(name: str):
    # Unpickling a saved study (tuner.pkl holds its searcher) looks the class up by name.
    if name == "RetryTolerantOptunaSearch":
        return _optuna_search_class()
    raise AttributeError(name)
