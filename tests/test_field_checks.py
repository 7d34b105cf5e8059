"""Each options dataclass checks its own fields (xstilts.fields.FieldError names the field
relative to it); the study config prefixes the section, and the preflight of paths is separate."""
from __future__ import annotations

import pytest

from xstilts.fields import FieldError
from xstilts.study.config import ConfigError, MlflowConfig, SearchConfig, parse_config
from xstilts.trainables.config import ResourceOptions, TrainingOptions


@pytest.mark.parametrize("options, field", [
    (TrainingOptions(batch_size=0), "batch_size"),
    (TrainingOptions(warmup_ratio=1.0), "warmup_ratio"),
    (TrainingOptions(max_train_examples_by_task={"no_such_task": 5}), "max_train_examples_by_task.no_such_task"),
    (ResourceOptions(cpus_per_worker=0), "cpus_per_worker"),
    (ResourceOptions(trial_max_failures=101), "trial_max_failures"),
    (SearchConfig(sampler="bayes"), "sampler"),
    (SearchConfig(tell_stopped_as="never"), "tell_stopped_as"),
    (SearchConfig(startup_trials=0), "startup_trials"),
    (SearchConfig(decide_on_seeds=-1), "decide_on_seeds"),
    (MlflowConfig(tracking_uri="./mlruns"), "tracking_uri"),
])
def test_dataclass_checks_its_fields(options, field):
    with pytest.raises(FieldError) as caught:
        options.check()
    assert caught.value.field_name == field and "\n" not in str(caught.value) and caught.value.fix


def test_defaults_pass():
    for options in (TrainingOptions(), ResourceOptions(), SearchConfig(), MlflowConfig()):
        options.check()


def _raw(tmp_path, **changes):
    raw = {"name": "f", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"], "intermediate_tasks": ["none"],
           "search_space": {"target_lr": {"type": "choice", "values": [1e-3]}},
           "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}, "storage_path": str(tmp_path / "runs")}
    raw.update(changes)
    return raw


def test_study_config_names_the_section(tmp_path):
    with pytest.raises(ConfigError, match=r"^config field 'training.batch_size': must be an integer >= 1, got 0; use 1"):
        parse_config(_raw(tmp_path, training={"batch_size": 0}))


def test_paths_are_the_preflight(tmp_path):
    from xstilts.study.config import _check_values
    from xstilts.study.preflight import check_paths

    config = parse_config(_raw(tmp_path))
    import dataclasses

    missing = dataclasses.replace(config, data_dir=str(tmp_path / "absent"))
    _check_values(missing)  # the values are fine: only the preflight looks at the disk
    with pytest.raises(ConfigError, match="config field 'data_dir': folder .* does not exist"):
        check_paths(missing)
