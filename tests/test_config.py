"""Bad study configs: one line naming the field and the fix, exit 2, and nothing left behind
(no Ray started, no MLflow store or run, no files)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config

BASE = yaml.safe_load(DEFAULT_CONFIG.read_text())


def _with(**changes):
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return raw


_DELETE = object()

# (case id, config changes, the field the message must name, a word of the fix it must give)
BAD_CONFIGS = [
    ("unknown top-level key", {"num_trails": 4}, "num_trails", "use one of"),
    ("unknown nested key", {"training__batchsize": 8}, "training.batchsize", "use one of"),
    ("wrong type", {"num_samples": "four"}, "num_samples", "integer"),
    ("wrong nested type", {"training__batch_size": 1.5}, "training.batch_size", "int"),
    ("lr zero", {"search_space__target_lr": {"type": "loguniform", "low": 0, "high": 1e-3}}, "search_space.target_lr", "> 0"),
    ("lr negative in choice", {"search_space__intermediate_lr": {"type": "choice", "values": [1e-3, -1e-4]}}, "search_space.intermediate_lr", "> 0"),
    ("lr low above high", {"search_space__target_lr": {"type": "uniform", "low": 1e-3, "high": 1e-4}}, "search_space.target_lr.low", "swap"),
    ("unknown target task", {"target_tasks": ["synthetic_xnli", "xnlii"]}, "target_tasks", "known tasks"),
    ("unknown intermediate task", {"intermediate_tasks": ["none", "synthetic_mnl"]}, "intermediate_tasks", "did you mean"),
    ("empty search space", {"search_space": {}}, "search_space", "target_lr"),
    ("unknown search parameter", {"search_space__dropout": {"type": "uniform", "low": 0.1, "high": 0.2}}, "search_space.dropout", "use one of"),
    ("num_samples zero", {"num_samples": 0}, "num_samples", ">= 1"),
    ("per-task cap of an unknown task", {"training__max_train_examples_by_task": {"pawsxx": 1800}}, "training.max_train_examples_by_task.pawsxx", "known task"),
    ("per-task cap zero", {"training__max_train_examples_by_task": {"synthetic_xnli": 0}}, "training.max_train_examples_by_task.synthetic_xnli", ">= 1"),
    ("per-task caps not a mapping", {"training__max_train_examples_by_task": 1800}, "training.max_train_examples_by_task", "pawsx: 1800"),
    ("eval cap of an unknown task", {"training__max_eval_examples_by_task": {"buc": 2000}}, "training.max_eval_examples_by_task.buc", "known task"),
    ("eval cap zero", {"training__max_eval_examples_by_task": {"bucc2018": 0}}, "training.max_eval_examples_by_task.bucc2018", ">= 1"),
    ("eval caps not a mapping", {"training__max_eval_examples_by_task": [2000]}, "training.max_eval_examples_by_task", "bucc2018: 2000"),
    ("phase-2 cap zero", {"training__intermediate_max_train_examples": 0}, "training.intermediate_max_train_examples", "null for no limit"),
    ("empty target list", {"target_tasks": []}, "target_tasks", "non-empty"),
    ("unknown scheduler", {"search__scheduler": "hyperband"}, "search.scheduler", "asha"),
    ("bad tracking uri", {"mlflow__tracking_uri": "./mlruns"}, "mlflow.tracking_uri", "sqlite"),
    ("missing data dir", {"data_dir": "/nonexistent/xstilts-data"}, "data_dir", "does not exist"),
    ("missing required key", {"target_tasks": _DELETE}, "target_tasks", "add it"),
    ("missing model folder", {"model": "./no-such-model-folder"}, "model", "config.json"),
]


@pytest.mark.parametrize("case,changes,field,fix", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_field_and_fix(case, changes, field, fix):
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(**changes))
    message = str(caught.value)
    assert f"'{field}'" in message
    assert fix in message
    assert "\n" not in message


def test_default_config_is_valid():
    config = load_config()
    assert config.target_tasks == ("synthetic_xnli", "synthetic_panx")
    assert "none" in config.intermediate_tasks and len(config.intermediate_tasks) >= 3
    assert config.num_samples * len(config.target_tasks) >= 6


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/study.yaml")


def _ray_dir(tmp_path: Path) -> Path:
    # The subprocess's own Ray temp dir: other Ray users on the machine cannot disturb the check.
    return tmp_path.parent / f"{tmp_path.name}-ray"


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XSTILTS_CACHE": str(tmp_path / "cache"), "RAY_TMPDIR": str(_ray_dir(tmp_path))}
    return subprocess.run([sys.executable, "-m", "xstilts.study.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


CLI_CASES = [
    ("malformed yaml", "name: [unclosed\n", [], "--config"),
    ("unknown key", yaml.safe_dump(_with(num_trails=3)), [], "num_trails"),
    ("lr <= 0", yaml.safe_dump(_with(search_space__target_lr={"type": "choice", "values": [0.0]})), [], "search_space.target_lr"),
    ("unknown task", yaml.safe_dump(_with(target_tasks=["panx_typo"])), [], "target_tasks"),
    ("empty space", yaml.safe_dump(_with(search_space={})), [], "search_space"),
    ("num_samples < 1 from the command line", yaml.safe_dump(BASE), ["--num-samples", "0"], "num_samples"),
    ("bad study name", yaml.safe_dump(BASE), ["--name", "my study/1"], "--name"),
    ("unreachable tracking server", yaml.safe_dump(BASE), ["--tracking-uri", "http://127.0.0.1:9"], "mlflow.tracking_uri"),
]


@pytest.mark.parametrize("case,config_text,extra,field", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, case, config_text, extra, field):
    (tmp_path / "study.yaml").write_text(config_text)
    before_files = set(os.listdir(tmp_path))
    result = _run_cli(tmp_path, "run", "--config", "study.yaml", *extra)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert field in lines[0]
    assert set(os.listdir(tmp_path)) == before_files  # no xstilts_runs/, no mlflow.db, no cache
    assert not _ray_dir(tmp_path).exists()  # Ray never started


def test_cli_missing_config_file(tmp_path):
    result = _run_cli(tmp_path, "run", "--config", "nope.yaml")
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "does not exist" in result.stderr
    assert os.listdir(tmp_path) == []


def test_cli_unknown_option_is_bad_input(tmp_path):
    result = _run_cli(tmp_path, "run", "--confg", "x.yaml")
    assert result.returncode == 2
    assert "--confg" in result.stderr


def test_real_and_retrieval_targets_are_accepted():
    config = parse_config(_with(target_tasks=["xnli", "panx", "tatoeba"],
                                intermediate_tasks=["none", "mnli", "squad_v1", "cosmosqa"]))
    assert config.target_tasks == ("xnli", "panx", "tatoeba")


def test_retrieval_task_cannot_be_an_intermediate():
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(intermediate_tasks=["none", "tatoeba"]))
    assert "'intermediate_tasks'" in str(caught.value) and "retrieval" in str(caught.value)


def test_missing_local_data_file_is_found_before_the_study(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(target_tasks=["xnli"], intermediate_tasks=["none"], data_dir=str(tmp_path)))
    message = str(caught.value)
    assert "'data_dir'" in message and "xnli" in message and "train" in message and "\n" not in message


def test_bad_data_files_mapping():
    with pytest.raises(ConfigError, match="'data_files'"):
        parse_config(_with(data_files={"xnli:train": 3}))
