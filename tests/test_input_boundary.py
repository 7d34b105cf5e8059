"""One input boundary: everything the CLI reads is validated before Ray starts or MLflow is
written. Every bad input ends in exit 2 with one line naming the field and the fix, never a
traceback, never a hang, and leaves nothing behind.

The named cases of issue 14 come first; then a seeded generator throws 600+ malformed configs and
argument lists at the CLI's validation path in-process (`xstilts validate`, and analyze/report/
export/resume/evaluate with inputs they must refuse), and a few subprocesses prove the real CLI
path matches.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from xstilts.study import cli
from xstilts.study.config import DEFAULT_CONFIG, ConfigError, load_config, load_yaml_text, parse_config

REPO = Path(__file__).resolve().parents[1]
BASE_TEXT = DEFAULT_CONFIG.read_text()
BASE = yaml.safe_load(BASE_TEXT)


# ---------------------------------------------------------------------------------------------
# Running the CLI in-process
# ---------------------------------------------------------------------------------------------

def call(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `xstilts argv` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def assert_bad_input(code: int, err: str, *words: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory (what is left in it afterwards was written by the CLI)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return cwd


def _config_file(tmp_path: Path, content: str | bytes, name: str = "study.yaml") -> str:
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return str(path)


def _with(**changes) -> str:
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return yaml.safe_dump(raw)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _laughs(depth: int, where: str = "name") -> str:
    """A "billion laughs" document: 10**depth copies of a string behind `where`."""
    text = 'l0: &l0 "lollollollollollollollollollollollollollollollollollollollollollollollollol"\n'
    for level in range(1, depth + 1):
        text += f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]\n"
    return text + f"{where}: *l{depth}\n" + BASE_TEXT.replace("name: embedded-default", "")


# ---------------------------------------------------------------------------------------------
# 1. Reading the config file
# ---------------------------------------------------------------------------------------------

FILE_CASES = [
    ("not utf-8", b"name: x\n\xff\xfe\xfd\n", "not UTF-8"),
    ("binary", bytes(range(256)) * 4, "not UTF-8"),
    ("nul byte", b"name: a\x00b\n", "not valid YAML"),
    ("deep nesting 5000", "name: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than 50"),
    ("deep mapping 60", "name: " + "{a: " * 60 + "1" + "}" * 60 + "\n", "nests deeper than 50"),
    ("billion laughs", _laughs(7), "expands to more than"),
    ("laughs in a number field", _laughs(6, "num_samples"), "expands to more than"),
    ("recursive alias", "a: &a [*a]\n" + BASE_TEXT, "alias inside its own anchor"),
    ("too big", "# " + "x" * 1_100_000 + "\n" + BASE_TEXT, "at most 1000000"),
    ("5000-digit integer", BASE_TEXT.replace("num_samples: 4", "num_samples: " + "9" * 5000), "cannot be read"),
    ("two documents", BASE_TEXT + "\n---\nname: x\n", "not valid YAML"),
    ("not a mapping", "[1, 2, 3]\n", "mapping"),
]


@pytest.mark.parametrize("case,content,words", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_config_file_cases(workdir, tmp_path, case, content, words):
    started = time.monotonic()
    code, _, err = call(["validate", "--config", _config_file(tmp_path, content)])
    line = assert_bad_input(code, err, words)
    assert time.monotonic() - started < 10
    assert len(line) < 1200  # never built from an expanded value
    assert os.listdir(workdir) == []


@pytest.mark.parametrize("path", ["/dev/zero", "FOLDER", "/nonexistent/x.yaml", ""])
def test_config_path_not_a_file(workdir, tmp_path, path):
    path = str(tmp_path) if path == "FOLDER" else path
    code, _, err = call(["validate", "--config", path])
    assert_bad_input(code, err, "--config")


def test_alias_bomb_error_quotes_at_most_80_characters():
    raw = load_yaml_text('a: &a "' + "x" * 5000 + '"\nname: [*a, *a]\nmodel: m\n', "t.yaml")
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert len(str(caught.value)) < 300


def test_small_aliases_are_fine():
    text = BASE_TEXT.replace("training:\n", "common: &c {gradient_accumulation_steps: 2}\ntraining:\n  <<: *c\n")
    raw = load_yaml_text(text, "t.yaml")
    del raw["common"]
    assert parse_config(raw).training.gradient_accumulation_steps == 2


def test_scientific_notation_is_a_number(tmp_path):
    text = BASE_TEXT.replace("target_lr: {type: loguniform, low: 0.0003, high: 0.003}",
                             "target_lr: {type: loguniform, low: 3e-4, high: 3E-3}")
    text = text.replace("warmup_ratio: 0.1", "warmup_ratio: 1e-1\n  weight_decay: 1e-2")
    config = load_config(_config_file(tmp_path, text))
    assert config.search_space["target_lr"].low == pytest.approx(3e-4)
    assert config.search_space["target_lr"].high == pytest.approx(3e-3)
    assert config.training.weight_decay == pytest.approx(0.01)
    # From any loader (runner's yaml.safe_load): the text "3e-4" where a number is expected.
    raw = yaml.safe_load(BASE_TEXT)
    raw["search_space"]["intermediate_lr"] = {"type": "choice", "values": ["1e-5", "3e-5"]}
    raw["training"]["weight_decay"] = "1e-2"
    config = parse_config(raw)
    assert config.search_space["intermediate_lr"].values == (1e-5, 3e-5)
    assert config.training.weight_decay == 0.01


def test_resume_loader_has_the_same_limits():
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml_text(_laughs(7), "the stored study config")
    with pytest.raises(ConfigError, match="nests deeper"):
        load_yaml_text("a: " + "[" * 3000 + "]" * 3000, "the stored study config")


# ---------------------------------------------------------------------------------------------
# 2. Values
# ---------------------------------------------------------------------------------------------

VALUE_CASES = [
    ("max_grad_norm nan", BASE_TEXT.replace("training:\n", "training:\n  max_grad_norm: .nan\n"), "training.max_grad_norm"),
    ("weight_decay inf", BASE_TEXT.replace("training:\n", "training:\n  weight_decay: .inf\n"), "training.weight_decay"),
    ("cpus_per_worker nan", BASE_TEXT.replace("cpus_per_worker: 1", "cpus_per_worker: .nan"), "resources.cpus_per_worker"),
    ("cpus_per_worker 1000", BASE_TEXT.replace("cpus_per_worker: 1", "cpus_per_worker: 1000"), "resources.cpus_per_worker"),
    ("warmup_ratio -inf", BASE_TEXT.replace("warmup_ratio: 0.1", "warmup_ratio: -.inf"), "training.warmup_ratio"),
    ("lr bound nan", _with(search_space__target_lr={"type": "loguniform", "low": float("nan"), "high": 1e-3}), "search_space.target_lr.low"),
    ("lr bound inf", _with(search_space__target_lr={"type": "uniform", "low": 1e-5, "high": float("inf")}), "search_space.target_lr.high"),
    ("lr choice nan", _with(search_space__intermediate_lr={"type": "choice", "values": [float("nan")]}), "search_space.intermediate_lr"),
    ("lr huge int", _with(search_space__intermediate_lr={"type": "choice", "values": [10 ** 400]}), "search_space.intermediate_lr"),
    ("search.seed -1", _with(search__seed=-1), "search.seed"),
    ("search.seed 2**70", _with(search__seed=2 ** 70), "search.seed"),
    ("seed -5", _with(seed=-5), "seed"),
    ("empty experiment", _with(mlflow__experiment=""), "mlflow.experiment"),
    ("embedded typo", _with(model="embedded:tiny-xlmrr"), "model"),
    ("config name too long", _with(name="n" * 200), "name"),
    ("config name dotdot", _with(name=".."), "name"),
    ("config name unicode", _with(name="étude"), "name"),
    ("missing type of a param", _with(search_space__target_lr={"low": 1e-5, "high": 1e-4}), "search_space.target_lr.type"),
    ("values not a list", _with(search_space__intermediate_lr={"type": "choice", "values": 5}), "search_space.intermediate_lr.values"),
    ("data_dir int", _with(data_dir=3), "data_dir"),
    ("storage path nul", _with(storage_path="a\x00b"), "storage_path"),
    ("list in intermediate tasks with mixtures", _with(intermediate_tasks=["none", ["x"], "m"],
                                                      mixtures={"m": {"tasks": ["synthetic_mnli", "synthetic_qqp"]}}),
     "intermediate_tasks"),
]


@pytest.mark.parametrize("case,text,field", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_value_cases(workdir, tmp_path, case, text, field):
    code, _, err = call(["validate", "--config", _config_file(tmp_path, text)])
    line = assert_bad_input(code, err, f"'{field}'")
    if case == "embedded typo":
        assert "embedded:tiny-xlmr" in line.split(";")[1]
    assert os.listdir(workdir) == []


@pytest.mark.parametrize("name", ["n" * 101, "n" * 300, "a/b", ".", "..", "s1'", "a b", "-x", "ü", ""])
def test_bad_name_option(workdir, name):
    code, _, err = call(["validate", f"--name={name}"])
    assert_bad_input(code, err, "'--name'")


def test_default_validates_ok(workdir):
    code, out, err = call(["validate"])
    assert code == 0, err
    assert out.startswith("ok: study embedded-default-") and len(out.splitlines()) == 1
    assert os.listdir(workdir) == []


# ---------------------------------------------------------------------------------------------
# 3. Probes, through the commands
# ---------------------------------------------------------------------------------------------

def test_run_unreachable_address_exits_2_fast(workdir):
    started = time.monotonic()
    code, _, err = call(["run", "--address", f"127.0.0.1:{_closed_port()}", "--num-samples", "1"])
    assert_bad_input(code, err, "'--address'", "cannot reach")
    code, _, err = call(["run", "--address", "not-an-address"])
    assert_bad_input(code, err, "'--address'", "ray://")
    code, _, err = call(["run", "--address", f"ray://127.0.0.1:{_closed_port()}"])
    assert_bad_input(code, err, "'--address'", "Ray Client")
    assert time.monotonic() - started < 30
    assert os.listdir(workdir) == []


def test_run_silent_address_gives_up(workdir, monkeypatch):
    monkeypatch.setenv("XSTILTS_PROBE_TIMEOUT_S", "2")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        started = time.monotonic()
        code, _, err = call(["run", "--address", f"127.0.0.1:{server.getsockname()[1]}"])
        assert_bad_input(code, err, "'--address'", "did not answer")
        assert time.monotonic() - started < 30
    finally:
        server.close()
    assert os.listdir(workdir) == []


@pytest.mark.parametrize("command", [["analyze"], ["analyze", "--list"], ["report", "--study", "s", "--out", "rep"],
                                     ["export", "--study", "s", "--target", "synthetic_xnli", "--out", "exp"],
                                     ["export", "--from-registry", "--target", "synthetic_xnli", "--out", "exp"],
                                     ["resume", "s1"], ["run"], ["validate"]])
@pytest.mark.parametrize("uri", ["HTTP", "sqlite:////etc/passwd", "FOLDER", "postgresql://u:pw@127.0.0.1/db", "mysql://127.0.0.1/db"])
def test_store_commands_refuse_unusable_tracking_uris(workdir, tmp_path, monkeypatch, command, uri):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("psycopg2", "MySQLdb") else real(name, *a))
    uri = {"HTTP": f"http://127.0.0.1:{_closed_port()}", "FOLDER": f"sqlite:///{tmp_path}"}.get(uri, uri)
    started = time.monotonic()
    code, _, err = call([*command, "--tracking-uri", uri])
    line = assert_bad_input(code, err, "tracking")
    assert "pw@" not in line
    assert time.monotonic() - started < 30
    assert os.listdir(workdir) == []


# ---------------------------------------------------------------------------------------------
# 4. evaluate
# ---------------------------------------------------------------------------------------------

def _evaluate_folders(tmp_path: Path, prediction: str) -> tuple[Path, Path]:
    p, l = tmp_path / "p", tmp_path / "l"
    for folder in (p, l):
        (folder / "xquad").mkdir(parents=True)
    (l / "xquad" / "test-en.json").write_text(json.dumps(
        {"data": [{"paragraphs": [{"qas": [{"id": "q", "answers": [{"text": "x"}]}]}]}]}))
    (p / "xquad" / "test-en.json").write_text(prediction)
    return p, l


@pytest.mark.parametrize("case,prediction,words", [
    ("200k deep", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ("4300-digit integer", '{"q": ' + "1" * 4301 + "}", "cannot be read"),
])
def test_evaluate_hostile_json(workdir, tmp_path, case, prediction, words):
    p, l = _evaluate_folders(tmp_path, prediction)
    code, _, err = call(["evaluate", "--prediction-folder", str(p), "--label-folder", str(l)])
    assert_bad_input(code, err, words, str(p / "xquad" / "test-en.json"))


def test_evaluate_nothing_to_score(workdir, tmp_path):
    p, l = tmp_path / "p", tmp_path / "l"
    p.mkdir()
    l.mkdir()
    code, _, err = call(["evaluate", "--prediction-folder", str(p), "--label-folder", str(l)])
    assert_bad_input(code, err, "nothing to score", "xnli", "test-<lang>")
    code, _, err = call(["evaluate", "--prediction-folder", str(p), "--label-folder", str(l), "--tasks", "xnli"])
    assert_bad_input(code, err, "nothing to score", "xnli/test-<lang>.tsv")


# ---------------------------------------------------------------------------------------------
# 5. --out and names that reach MLflow filters
# ---------------------------------------------------------------------------------------------

def test_export_out_names_a_file(workdir, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, _, err = call(["export", "--study", "s", "--target", "synthetic_xnli", "--out", str(tmp_path / "afile")])
    assert_bad_input(code, err, "'--out'", "is a file")


def _deny_writes_under(monkeypatch, folder: Path):
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if (mode & os.W_OK and
                        str(path).startswith(str(folder))) else real(path, mode, *a, **k))


def test_out_in_a_read_only_folder(workdir, tmp_path, monkeypatch):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    _deny_writes_under(monkeypatch, readonly)
    for argv in (["export", "--study", "s", "--target", "synthetic_xnli", "--out", str(readonly / "m")],
                 ["report", "--study", "s", "--out", str(readonly)],
                 ["report", "--study", "s", "--out", str(readonly / "new")]):
        code, _, err = call(argv)
        assert_bad_input(code, err, "'--out'", "not writable")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_chmod_read_only_folder(workdir, tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        code, _, err = call(["export", "--study", "s", "--target", "synthetic_xnli", "--out", str(readonly / "m")])
        assert_bad_input(code, err, "'--out'")
        code, _, err = call(["report", "--study", "s", "--out", str(readonly)])
        assert_bad_input(code, err, "'--out'")
    finally:
        readonly.chmod(0o755)


@pytest.mark.parametrize("name", ["s1'", "x' or '1'='1", "a b", "..", "n" * 101])
def test_resume_name_is_validated_before_mlflow(workdir, name):
    code, _, err = call(["resume", name])
    assert_bad_input(code, err, "'NAME'")
    code, _, err = call(["analyze", "--study", name])
    assert_bad_input(code, err, "'--study'")


# ---------------------------------------------------------------------------------------------
# 6. The generator: 600+ malformed configs and argument lists
# ---------------------------------------------------------------------------------------------

BAD_VALUES = [None, "", " ", "x" * 500, -1, 0, 1, 2 ** 70, -(2 ** 70), 10 ** 300, 1e308, -1e-300,
              math.nan, math.inf, -math.inf, True, False, [], {}, [1, 2], {"a": 1}, "3e-4", "1e-5", "nan",
              "\x00", "\x07bell", "é", "../..", "/", ".", "embedded:x", "embedded:tiny-xlmrr", [[[[[]]]]],
              {"type": "choice"}, {"type": "loguniform", "low": "a", "high": []}, ["none"], "none", 0.5, -0.5]
FIELDS = ["name", "model", "target_tasks", "intermediate_tasks", "search_space", "search_space.target_lr",
          "search_space.target_lr.low", "search_space.target_lr.high", "search_space.target_lr.type",
          "search_space.intermediate_lr", "search_space.intermediate_lr.values", "search_space.retrieval_layer",
          "search_space.target_train", "search", "search.seed", "search.sampler", "search.scheduler",
          "search.grace_period", "search.reduction_factor", "search.baseline_first", "num_samples",
          "max_concurrent_trials", "resources", "resources.num_workers", "resources.use_gpu",
          "resources.cpus_per_worker", "resources.max_failures", "training", "training.batch_size",
          "training.weight_decay", "training.max_grad_norm", "training.warmup_ratio", "training.max_length",
          "training.max_train_examples_by_task", "training.mlm_weight", "training.mlm_probability",
          "training.holdout_fraction", "training.early_stopping_patience", "mlflow", "mlflow.tracking_uri",
          "mlflow.experiment", "storage_path", "data_dir", "data_files", "seed", "mixtures", "mixtures.m",
          "mixtures.m.tasks", "mixtures.m.weights", "mixtures.m.temperature", "unknown_key", "training.unknown"]
NAMES = ["ok-name", "n" * 101, "a/b", ".", "..", "-x", "s1'", "é", "a b", "x" * 100, "\t"]
ADDRESSES = ["not-an-address", "127.0.0.1:{closed}", "ray://127.0.0.1:{closed}", "ray://", "host:abc",
             ":1", "[::1]:{closed}", "h:99999", "auto"]
URIS = ["sqlite:////etc/passwd", "sqlite:///{folder}", "http://127.0.0.1:{closed}", "ftp://x", "./mlruns",
        "sqlite:///{tmp}/new.db", "postgresql://u:pw@127.0.0.1:{closed}/db", ""]


def _set(raw: dict, dotted: str, value) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[leaf] = value


def _delete(raw: dict, dotted: str) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(leaf, None)


def _dump(raw) -> str:
    try:
        return yaml.safe_dump(raw, allow_unicode=True)
    except yaml.YAMLError:
        return yaml.safe_dump(str(raw))


def generate_cases(seed: int, count: int, tmp: Path) -> list[tuple[str, str | bytes | None, list[str]]]:
    """(description, config content or None for the default, extra argv) for `validate`, or
    (description, None, full argv) for other commands (argv then starts with the command)."""
    rng = random.Random(seed)
    fmt = {"closed": str(_closed_port()), "folder": str(tmp), "tmp": str(tmp)}
    cases = []
    for index in range(count):
        kind = rng.choice(["value", "value", "value", "delete", "section", "nest", "laughs", "bytes",
                           "truncate", "argv", "argv", "other"])
        raw = copy.deepcopy(BASE)
        if rng.random() < 0.2:
            raw["mixtures"] = {"m": {"tasks": ["synthetic_mnli", "synthetic_qqp"]}}
            raw["intermediate_tasks"] = ["none", "m"]
        content: str | bytes | None
        extra: list[str] = []
        if kind == "value":
            for _ in range(rng.randint(1, 3)):
                _set(raw, rng.choice(FIELDS), copy.deepcopy(rng.choice(BAD_VALUES)))
            content = _dump(raw)
        elif kind == "delete":
            for _ in range(rng.randint(1, 3)):
                _delete(raw, rng.choice(FIELDS))
            content = _dump(raw)
        elif kind == "section":
            content = _dump(rng.choice([[], "text", 5, None, {"name": "x"}, {}, [BASE]]))
        elif kind == "nest":
            depth = rng.choice([10, 49, 51, 60, 500, 3000, 20000])
            opener, closer = rng.choice([("[", "]"), ("{a: ", "}")])
            content = f"{rng.choice(FIELDS).split('.')[0]}: " + opener * depth + "1" * (opener != "[") + closer * depth + "\n"
            content += BASE_TEXT if rng.random() < 0.5 else ""
        elif kind == "laughs":
            content = _laughs(rng.randint(1, 9), rng.choice(["name", "model", "num_samples", "storage_path"]))
        elif kind == "bytes":
            data = bytearray(BASE_TEXT.encode())
            for _ in range(rng.randint(1, 8)):
                data.insert(rng.randrange(len(data)), rng.randrange(256))
            content = bytes(data) if rng.random() < 0.8 else bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
        elif kind == "truncate":
            content = BASE_TEXT[: rng.randrange(len(BASE_TEXT))]
        elif kind == "argv":
            content = _dump(raw) if rng.random() < 0.5 else None
            options = {"--name": NAMES, "--address": ADDRESSES, "--tracking-uri": URIS,
                       "--num-samples": ["0", "-1", "x", "1e3", "3", str(10 ** 30)]}
            for option in rng.sample(list(options), rng.randint(1, 3)):
                extra += [option, rng.choice(options[option]).format(**fmt)]
        else:
            command = rng.choice(["analyze", "report", "export", "resume", "evaluate"])
            uri = rng.choice(URIS + ["sqlite:///{tmp}/none.db"]).format(**fmt)
            name = rng.choice(NAMES)
            argv = {
                "analyze": ["analyze", "--study", name, "--tracking-uri", uri, "--experiment", rng.choice(["", "x", "\x01"])],
                "report": ["report", "--study", name, "--out", rng.choice([str(tmp / "f.txt"), str(tmp / "r"), "/proc/x"]),
                           "--tracking-uri", uri, "--returns-threshold", rng.choice(["0", "-1", "nan", "inf", "0.5"])],
                "export": ["export", "--study", name, "--target", rng.choice(["synthetic_xnli", "x"]), "--out",
                           rng.choice([str(tmp / "f.txt"), str(tmp), "/proc/x", str(tmp / "new")]), "--tracking-uri", uri],
                "resume": ["resume", name, "--tracking-uri", uri] + rng.choice([[], ["--address", "not-an-address"]]),
                "evaluate": ["evaluate", "--prediction-folder", rng.choice([str(tmp), "/nonexistent", "/dev/zero"]),
                             "--label-folder", rng.choice([str(tmp), "/nonexistent"]), "--tasks", rng.choice(["", ",", "xnli", "ner"])],
            }[command]
            cases.append((f"{index}:{command}", None, argv))
            continue
        cases.append((f"{index}:{kind}", content, extra))
    return cases


def test_generated_malformed_inputs(workdir, tmp_path):
    import importlib.util

    (tmp_path / "f.txt").write_text("a file")
    cases = generate_cases(seed=14, count=650, tmp=tmp_path)
    assert len(cases) >= 500
    started = time.monotonic()
    outcomes = {0: 0, 2: 0}
    real_find_spec = importlib.util.find_spec
    for description, content, extra in cases:
        if content is None and extra and extra[0] in cli.COMMANDS:
            argv = extra
        else:
            argv = ["validate"] + (["--config", _config_file(tmp_path, content)] if content is not None else []) + extra
        try:
            code, out, err = call(argv)
        except BaseException as error:  # what would be a traceback on the command line
            pytest.fail(f"case {description}: {argv[:6]} raised {type(error).__name__}: {str(error)[:300]}")
        assert importlib.util.find_spec is real_find_spec
        lines = [line for line in err.splitlines() if line.strip()]
        assert code in (0, 2), f"case {description}: exit {code}: {err[:500]}"
        assert len(lines) <= 3, f"case {description}: {err[:500]}"
        assert "Traceback" not in err, f"case {description}: {err[:500]}"
        assert all(len(line) < 3000 for line in lines), f"case {description}"
        assert os.listdir(workdir) == [], f"case {description} left {os.listdir(workdir)}"
        outcomes[code] += 1
    took = time.monotonic() - started
    assert took < 120, f"{len(cases)} cases took {took:.0f}s"
    assert outcomes[2] > outcomes[0] > 0  # mostly refused, and the generator is not refusing everything
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    print(f"{len(cases)} generated cases in {took:.1f}s: {outcomes}")


# ---------------------------------------------------------------------------------------------
# The real command line matches
# ---------------------------------------------------------------------------------------------

def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path / "ray"), "XSTILTS_CACHE": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "xstilts.study.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


SUBPROCESS_CASES = [
    ("closed address", ["run", "--address", "127.0.0.1:9", "--num-samples", "1"], "'--address'"),
    ("unparsable address", ["run", "--address", "not-an-address"], "'--address'"),
    ("unreachable tracking server", ["analyze", "--tracking-uri", "http://127.0.0.1:9"], "'--tracking-uri'"),
    ("not a database", ["report", "--study", "s", "--out", "r", "--tracking-uri", "sqlite:////etc/passwd"], "'--tracking-uri'"),
    ("alias bomb", ["validate", "--config", "LAUGHS"], "'--config'"),
    ("quote in a study name", ["resume", "s1'"], "'NAME'"),
]


@pytest.mark.parametrize("case,argv,field", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_real_cli(tmp_path, case, argv, field):
    if "LAUGHS" in argv:
        argv = [_config_file(tmp_path, _laughs(8)) if a == "LAUGHS" else a for a in argv]
    started = time.monotonic()
    result = _cli(tmp_path, *argv)
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], result.stderr
    assert os.listdir(tmp_path / "cwd") == []
    assert not (tmp_path / "ray").exists()
