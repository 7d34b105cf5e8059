"""Study configs with mixtures, "task@lang" sources, target_train and the phase-2 options:
what parses, what each trial is sent, and one clear line for each mistake."""
from __future__ import annotations

import copy
import dataclasses

import pytest

from xstilts.study.config import ConfigError, parse_config
from xstilts.study.search import DefineSpace, make_searcher
from xstilts.trainables.config import TrialConfig
from xstilts.trainables.trial import intermediate_cache_fields, intermediate_params, phase2_sources, target_sources


def _raw(tmp_path, **changes):
    raw = {
        "name": "mix", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"],
        "mixtures": {"nli_en_near": {"tasks": ["synthetic_mnli", "synthetic_mnli@near"],
                                     "sampling": "temperature", "temperature": 2.0}},
        "intermediate_tasks": ["none", "synthetic_mnli@far", "nli_en_near"],
        "search_space": {"intermediate_lr": {"type": "choice", "values": [1e-3]},
                         "target_lr": {"type": "choice", "values": [1e-3]},
                         "target_train": {"type": "choice", "values": ["english", "translate_train"]}},
        "training": {"mlm_weight": 0.5, "early_stopping_patience": 2, "freeze_embeddings": True},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}, "storage_path": str(tmp_path / "runs"),
    }
    raw.update(changes)
    return raw


def _trial(config, intermediate: str, target_train: str = "english") -> TrialConfig:
    """The trial config Tune would build for one sampled point (the runner's base + the point)."""
    base = {"study_name": "s", "target_task": config.target_tasks[0], "model_path": "m", "seed": 0,
            "storage_path": "/s", "phase_cache_dir": "/c", "mlflow_tracking_uri": "sqlite:///x.db",
            "mlflow_experiment_id": "1", "mlflow_parent_run_id": "p", "training": {}, "resources": {},
            "intermediate_catalog": config.intermediate_catalog()}
    return TrialConfig.from_tune_config({**base, "intermediate_task": intermediate, "intermediate_lr": 1e-3,
                                         "target_lr": 1e-3, "target_train": target_train})


def test_mixtures_and_language_sources_reach_the_trial(tmp_path):
    config = parse_config(_raw(tmp_path))
    assert config.intermediate_sources("nli_en_near") == ("synthetic_mnli@en", "synthetic_mnli@near")
    assert config.intermediate_sources("synthetic_mnli@far") == ("synthetic_mnli@far",)
    assert config.intermediate_sources("none") == ()
    mixed = _trial(config, "nli_en_near")
    assert mixed.intermediate_mixture.tasks == ("synthetic_mnli@en", "synthetic_mnli@near")
    assert (mixed.intermediate_mixture.sampling, mixed.intermediate_mixture.temperature) == ("temperature", 2.0)
    assert intermediate_params(mixed) == {
        "intermediate_sources": "synthetic_mnli@en,synthetic_mnli@near", "intermediate_languages": "en,near",
        "intermediate_num_languages": 2, "intermediate_sampling": "temperature", "intermediate_temperature": 2.0}
    far = _trial(config, "synthetic_mnli@far")
    assert phase2_sources(far) == ("synthetic_mnli@far",)
    assert intermediate_params(far)["intermediate_num_languages"] == 1
    assert intermediate_params(_trial(config, "none"))["intermediate_num_languages"] == 0


def test_weights_set_the_ratio_and_reach_the_trial(tmp_path):
    raw = _raw(tmp_path)
    raw["mixtures"]["nli_en_near"].update(sampling="proportional", weights=[3, 1])
    trial = _trial(parse_config(raw), "nli_en_near")
    assert trial.intermediate_mixture.weights == (3, 1)
    assert intermediate_params(trial)["intermediate_weights"] == "3,1"
    assert intermediate_cache_fields(trial)["weights"] == [3, 1]
    from xstilts.trainables.multitask import mixture_steps, source_probabilities

    counts = {"synthetic_mnli@en": 200, "synthetic_mnli@near": 200}
    weights = {"synthetic_mnli@en": 3.0, "synthetic_mnli@near": 1.0}
    assert source_probabilities(counts, "proportional", 1.0, weights) == pytest.approx(
        {"synthetic_mnli@en": 0.75, "synthetic_mnli@near": 0.25})
    drawn = [name for name, _ in mixture_steps(counts, "proportional", 1.0, 0, 0, weights)]
    assert abs(drawn.count("synthetic_mnli@en") / len(drawn) - 0.75) < 0.05


def test_phase_cache_keys_follow_what_is_trained_not_the_name(tmp_path):
    config = parse_config(_raw(tmp_path))
    renamed = parse_config(_raw(tmp_path, mixtures={"other_name": config.mixtures["nli_en_near"].__dict__ | {
        "tasks": ["synthetic_mnli", "synthetic_mnli@near"]}}, intermediate_tasks=["none", "other_name"]))
    assert intermediate_cache_fields(_trial(config, "nli_en_near")) == \
        intermediate_cache_fields(_trial(renamed, "other_name"))
    hotter = copy.deepcopy(_raw(tmp_path))
    hotter["mixtures"]["nli_en_near"]["temperature"] = 5.0
    assert intermediate_cache_fields(_trial(parse_config(hotter), "nli_en_near")) != \
        intermediate_cache_fields(_trial(config, "nli_en_near"))
    # A single English task keeps the key it always had (cache entries of earlier studies hit).
    single = _trial(parse_config(_raw(tmp_path, intermediate_tasks=["synthetic_mnli"], mixtures={})), "synthetic_mnli")
    assert intermediate_cache_fields(single)["intermediate_task"] == "synthetic_mnli"


def test_translate_train_uses_every_target_language(tmp_path):
    config = parse_config(_raw(tmp_path))
    from xstilts.tasks import get_task

    target = get_task("synthetic_xnli")
    assert target_sources(_trial(config, "none", "english"), target) is None
    assert target_sources(_trial(config, "none", "translate_train"), target) == tuple(
        f"synthetic_xnli@{l}" for l in target.languages)


def test_target_train_is_searched_and_the_baseline_is_zero_shot(tmp_path):
    import optuna

    config = parse_config(_raw(tmp_path))
    space = DefineSpace(config.intermediate_tasks, dict(config.search_space))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        space(trial)
        seen.add(trial.params["target_train"])
    assert seen == {"english", "translate_train"}
    searcher = make_searcher(config, 0)
    points = searcher.searcher._points_to_evaluate
    assert points[0]["intermediate_task"] == "none" and points[0]["target_train"] == "english"


@pytest.mark.parametrize("change, field", [
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli", "nope"]}}, "intermediate_tasks": ["m"]}, "mixtures.m.tasks"),
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli", "synthetic_mnli@xx"]}}, "intermediate_tasks": ["m"]}, "mixtures.m.tasks"),
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli"]}}, "intermediate_tasks": ["m"]}, "mixtures.m.tasks"),
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli", "synthetic_mnli@en"]}}, "intermediate_tasks": ["m"]}, "mixtures.m.tasks"),
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli", "synthetic_qqp"], "sampling": "uniform"}}, "intermediate_tasks": ["m"]}, "mixtures.m.sampling"),
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli", "synthetic_qqp"], "temperature": 0}}, "intermediate_tasks": ["m"]}, "mixtures.m.temperature"),
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli", "synthetic_qqp"], "weights": [1]}}, "intermediate_tasks": ["m"]}, "mixtures.m.weights"),
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli", "synthetic_qqp"], "weights": [1, 0]}}, "intermediate_tasks": ["m"]}, "mixtures.m.weights"),
    ({"mixtures": {"m": {"tasks": ["synthetic_mnli", "synthetic_qqp"], "ratio": [1, 2]}}, "intermediate_tasks": ["m"]}, "mixtures.m.ratio"),
    ({"model": "xlm-roberta-base", "target_tasks": ["xnli"], "intermediate_tasks": ["ccg"], "mixtures": {},
      "training": {}}, "data_dir"),
    ({"mixtures": {"synthetic_mnli": {"tasks": ["synthetic_mnli", "synthetic_qqp"]}}}, "mixtures.synthetic_mnli"),
    ({"mixtures": {"unused": {"tasks": ["synthetic_mnli", "synthetic_qqp"]}}, "intermediate_tasks": ["none"]}, "mixtures.unused"),
    ({"mixtures": ["synthetic_mnli"]}, "mixtures"),
    ({"intermediate_tasks": ["synthetic_mnli@klingon"], "mixtures": {}}, "intermediate_tasks"),
    ({"target_tasks": ["synthetic_xnli@near"]}, "target_tasks"),
    ({"search_space": {"target_lr": {"type": "choice", "values": [1e-3]}, "intermediate_lr": {"type": "choice", "values": [1e-3]},
                       "target_train": {"type": "choice", "values": ["english", "translate"]}}}, "search_space.target_train"),
    ({"training": {"mlm_weight": -1.0}}, "training.mlm_weight"),
    ({"training": {"mlm_weight": 0.5, "mlm_corpus": "/no/such/corpus.txt"}}, "training.mlm_corpus"),
    ({"model": "xlm-roberta-base", "training": {"mlm_weight": 0.5}}, "training.mlm_corpus"),
    ({"training": {"mlm_probability": 1.5}}, "training.mlm_probability"),
    ({"training": {"early_stopping_patience": 0}}, "training.early_stopping_patience"),
    ({"training": {"holdout_fraction": 1.0}}, "training.holdout_fraction"),
    ({"training": {"freeze_embeddings": "yes"}}, "training.freeze_embeddings"),
])
def test_mistakes_are_one_line_naming_the_field(tmp_path, change, field):
    with pytest.raises(ConfigError) as error:
        parse_config(_raw(tmp_path, **change))
    message = str(error.value)
    assert f"'{field}'" in message and "\n" not in message, message


def test_translate_train_without_local_translations_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "xnli").mkdir(parents=True)
    for name in ("train-en.tsv", "dev-en.tsv"):
        (data / "xnli" / name).write_text("a premise\ta hypothesis\tentailment\n")
    raw = _raw(tmp_path, model="xlm-roberta-base", target_tasks=["xnli"], intermediate_tasks=["none"], mixtures={},
               data_dir=str(data), training={},
               search_space={"target_lr": {"type": "choice", "values": [1e-5]},
                             "target_train": {"type": "choice", "values": ["translate_train"]}})
    with pytest.raises(ConfigError, match="search_space.target_train.*translate_train"):
        parse_config(raw)
    (data / "xnli" / "train-de.tsv").write_text("eine Praemisse\teine Hypothese\tentailment\n")
    assert parse_config(raw).target_train_choices == ("translate_train",)


def test_each_intermediate_first_puts_every_choice_at_the_front(tmp_path):
    raw = _raw(tmp_path, search={"each_intermediate_first": True})
    searcher = make_searcher(parse_config(raw), 0)
    points = searcher.searcher._points_to_evaluate
    assert [p["intermediate_task"] for p in points] == ["none", "synthetic_mnli@far", "nli_en_near"]
    assert all(p["target_train"] == "english" and p["target_lr"] == 1e-3 for p in points)
    assert "intermediate_lr" not in points[0] and points[1]["intermediate_lr"] == 1e-3


def test_a_target_without_english_dev_passes_the_preflight_and_holds_out(tmp_path, tokenizer, tokenizer_dir):
    """PAWS-X-like: only an English training file (and zero-shot dev files) exist locally."""
    from xstilts.tasks import DataOptions
    from xstilts.trainables.config import PhaseConfig, TrainingOptions
    from xstilts.trainables.phase_data import holdout_size as _holdout_size

    data = tmp_path / "data" / "xnli"
    data.mkdir(parents=True)
    rows = "".join(f"premise {i}\thypothesis {i}\t{['entailment', 'neutral', 'contradiction'][i % 3]}\n" for i in range(50))
    (data / "train-en.tsv").write_text(rows)
    (data / "dev-de.tsv").write_text(rows)
    raw = _raw(tmp_path, model="xlm-roberta-base", target_tasks=["xnli"], intermediate_tasks=["none"], mixtures={},
               data_dir=str(tmp_path / "data"), training={},
               search_space={"target_lr": {"type": "choice", "values": [1e-5]}})
    config = parse_config(raw)  # no English dev file: accepted
    options = DataOptions(config.data_dir, None, 0)
    cfg = PhaseConfig(phase="target", task="xnli", init_path=tokenizer_dir, tokenizer_path=tokenizer_dir,
                      learning_rate=1e-5, epochs=1, seed=0, training=TrainingOptions(), data_dir=config.data_dir)
    from xstilts.tasks import get_task

    assert _holdout_size(get_task("xnli"), "en", options, options, cfg) == 5  # 10 % of 50
    # A dev split that is the training file itself does not count as a dev split.
    same = DataOptions(config.data_dir, None, 0, {"xnli:dev:en": "xnli/train-en.tsv"})
    assert _holdout_size(get_task("xnli"), "en", same, same, cfg) == 5
    (data / "dev-en.tsv").write_text(rows)
    assert _holdout_size(get_task("xnli"), "en", options, options, cfg) == 0


def test_trial_config_is_strict(tmp_path):
    """An unknown key in a trial's Tune config (a misspelt or unconsumed search dimension) is an
    error naming it, not silently dropped; every search dimension is a TrialConfig field."""
    import dataclasses

    from xstilts.search_spaces.dimensions import DIMENSIONS
    from xstilts.trainables.config import TrialConfig

    fields = {f.name for f in dataclasses.fields(TrialConfig)}
    assert set(DIMENSIONS) <= fields
    good = _trial(parse_config(_raw(tmp_path)), "nli_en_near", "translate_train")
    raw = {**{f.name: getattr(good, f.name) for f in dataclasses.fields(TrialConfig)},
           "training": dataclasses.asdict(good.training), "resources": dataclasses.asdict(good.resources),
           "intermediate_mixture": good.intermediate_mixture.to_dict()}
    assert TrialConfig.from_tune_config(raw) == good
    with pytest.raises(ValueError, match="target_lrr"):
        TrialConfig.from_tune_config({**raw, "target_lrr": 1e-3})


def test_an_arm_with_its_own_mlm_weight(tmp_path, tokenizer, tokenizer_dir):
    """`mixtures.<name>.mlm_weight`: one task (or a mixture) + the MLM auxiliary loss is an arm of
    its own beside the plain task, keyed, logged and trained with that weight."""
    from xstilts.trainables.config import PhaseConfig, TrainingOptions
    from xstilts.trainables.phase_data import load_phase_data

    raw = _raw(tmp_path, mixtures={"mnli_mlm": {"tasks": ["synthetic_mnli"], "mlm_weight": 1.0}},
               intermediate_tasks=["none", "synthetic_mnli", "mnli_mlm"], training={})
    config = parse_config(raw)
    assert config.training.mlm_weight == 0 and config.mixtures["mnli_mlm"].mlm_weight == 1.0
    plain, with_mlm = _trial(config, "synthetic_mnli"), _trial(config, "mnli_mlm")
    assert phase2_sources(with_mlm) == phase2_sources(plain) == ("synthetic_mnli@en",)
    assert intermediate_params(with_mlm)["intermediate_mlm_weight"] == 1.0
    assert "intermediate_mlm_weight" not in intermediate_params(plain)
    fields = intermediate_cache_fields(with_mlm)
    assert fields["mlm_weight"] == 1.0 and "mlm_weight" not in intermediate_cache_fields(plain)
    assert with_mlm.intermediate_mixture.to_dict()["mlm_weight"] == 1.0  # survives the Tune config
    # the phase's data carries the arm's weight, not training.mlm_weight (0)
    cfg = PhaseConfig(phase="intermediate", task="synthetic_mnli", init_path=tokenizer_dir, tokenizer_path=tokenizer_dir,
                      learning_rate=1e-3, epochs=1, seed=0, training=TrainingOptions(max_train_examples=16,
                                                                                     max_eval_examples=8),
                      mixture=with_mlm.intermediate_mixture)
    data = load_phase_data(cfg, tokenizer)
    assert data.with_mlm and data.mlm_weight == 1.0 and data.multi and len(data.mlm_features) > 0
    assert not load_phase_data(dataclasses.replace(cfg, mixture=None), tokenizer).with_mlm
    # one task without an MLM weight is not a mixture; a negative weight names the field
    for body, field in (({"tasks": ["synthetic_mnli"]}, "mixtures.mnli_mlm.tasks"),
                        ({"tasks": ["synthetic_mnli"], "mlm_weight": -1}, "mixtures.mnli_mlm.mlm_weight")):
        with pytest.raises(ConfigError) as refused:
            parse_config({**raw, "mixtures": {"mnli_mlm": body}})
        assert str(refused.value).startswith(f"config field '{field}'")


def test_paper_yaml_mlm_arm_parses_once_uncommented(tmp_path):
    """paper.yaml ships the MLM-auxiliary arm commented out (it needs the user's text corpus):
    uncommented as its header says, it is a row of its own with the multi-task sources + MLM."""
    import yaml

    from xstilts.study.config import DEFAULT_CONFIG

    text = (DEFAULT_CONFIG.parent / "paper.yaml").read_text()
    for line in ("  # - multi_task_mlm", "  # multi_task_mlm:", "  #   tasks: [anli_plus", "  #   mlm_weight: 1.0",
                 "  # mlm_corpus: "):
        assert line in text, line
        text = text.replace(line, line.replace("# ", "", 1))
    corpus = tmp_path / "wiki.txt"
    corpus.write_text("Eine Zeile.\nUne ligne.\n")
    raw = yaml.safe_load(text)
    raw["training"]["mlm_corpus"] = str(corpus)
    config = parse_config(raw)
    arm = config.mixtures["multi_task_mlm"]
    assert "multi_task_mlm" in config.intermediate_tasks and arm.mlm_weight == 1.0
    assert arm.tasks == config.mixtures["multi_task"].tasks and config.training.mlm_weight == 0
