"""The scorer behind `xstilts evaluate`: XTREME's official prediction/label folder layout and numbers.

`score_folders(P, L)` reads the layout of google-research/xtreme's `evaluate.py` (benchmark
version "xtreme"): one subfolder per task, one `test-<lang>.<ext>` file per language, the same
relative path in P (predictions) and L (labels). It returns the same per-language scores,
per-task averages, group scores and `all_task` as the official script, with two intended
differences: a task is scored over the languages whose label file exists (the official script
fails unless every listed language is present), and malformed input is reported as an
`EvaluationInputError` with a one-line message naming the file (and line) instead of a traceback.

Pure reading + scoring: no printing, no writing. See docs/evaluate.md.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from xstilts.tasks import metrics


class EvaluationInputError(ValueError):
    """The prediction or label folders cannot be scored. str() is one line naming the file and problem."""

    def __init__(self, message: str) -> None:
        # One line, whatever a path or a decoder message contains.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


# The official task -> language lists of XTREME (benchmark version "xtreme"), in the official order.
OFFICIAL_LANGUAGES: dict[str, tuple[str, ...]] = {
    "pawsx": tuple("de en es fr ja ko zh".split()),
    "xnli": tuple("ar bg de el en es fr hi ru sw th tr ur vi zh".split()),
    "panx": tuple(
        "ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko "
        "th sw yo my zh kk tr et fi hu".split()
    ),
    "udpos": tuple(
        "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur "
        "vi yo zh".split()
    ),
    "bucc2018": tuple("de fr ru zh".split()),
    "tatoeba": tuple(
        "ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw "
        "zh kk tr et fi hu".split()
    ),
    "xquad": tuple("en es de el ru tr ar vi th zh hi".split()),
    "mlqa": tuple("en es de ar hi vi zh".split()),
    "tydiqa": tuple("en ar bn fi id ko ru sw te".split()),
}

# Group -> its tasks. A group score is the mean of its tasks' avg_metric, present only when all are scored.
TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "classification": ("pawsx", "xnli"),
    "tagging": ("udpos", "panx"),
    "qa": ("xquad", "mlqa", "tydiqa"),
    "retrieval": ("bucc2018", "tatoeba"),
}

# The embedded default's synthetic stand-ins for XTREME tasks (xstilts.tasks.synthetic): a folder of
# this name is scored in the file format and metrics of the XTREME task it imitates, over its own
# (synthetic) languages, so `xstilts predict` + `evaluate` work end to end on the embedded default.
# They belong to no group and never count towards all_task.
STAND_INS: dict[str, tuple[str, tuple[str, ...]]] = {
    "synthetic_xnli": ("xnli", ("en", "near", "mid", "far")),
    "synthetic_panx": ("panx", ("en", "near", "mid", "far")),
    "synthetic_tatoeba": ("tatoeba", ("near", "mid", "far")),
}


def task_format(task: str) -> str | None:
    """The XTREME task whose folder format and metrics `task`'s folder has (itself for the nine,
    the imitated task for a stand-in); None for any other name."""
    if task in OFFICIAL_LANGUAGES:
        return task
    return STAND_INS[task][0] if task in STAND_INS else None


def scored_languages(task: str) -> tuple[str, ...]:
    """The languages whose files are scored in `task`'s folder."""
    return OFFICIAL_LANGUAGES[task] if task in OFFICIAL_LANGUAGES else STAND_INS[task][1]


_QA_TASKS = frozenset(TASK_GROUPS["qa"])

# XTREME-R (Ruder et al. 2021, "XTREME-R: Towards More Challenging and Nuanced Multilingual
# Evaluation"): ten tasks over 50 languages, keyed by our task names (WikiANN = panx, UD-POS on
# UD v2.7). Language lists as google-research/xtreme's XTREME-R scripts predict them
# (train_udpos.sh, train_panx.sh, run_tatoeba.sh; XCOPA, Mewsli-X and LAReQA as their tasks).
XTREME_R_LANGUAGES: dict[str, tuple[str, ...]] = {
    "xnli": OFFICIAL_LANGUAGES["xnli"],
    "xcopa": tuple("et ht id it qu sw ta th tr vi zh".split()),
    "udpos": tuple("af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko lt mr nl pl pt ro ru ta te th tl "
                   "tr uk ur vi wo yo zh".split()),
    "panx": OFFICIAL_LANGUAGES["panx"] + tuple("qu pl uk az lt pa gu ro".split()),
    "xquad": OFFICIAL_LANGUAGES["xquad"],
    "mlqa": OFFICIAL_LANGUAGES["mlqa"],
    "tydiqa": OFFICIAL_LANGUAGES["tydiqa"],
    "tatoeba": OFFICIAL_LANGUAGES["tatoeba"] + tuple("az lt pl uk ro".split()),
    "mewsli_x": tuple("ar de en es fa ja pl ro ta tr uk".split()),
    "lareqa": OFFICIAL_LANGUAGES["xquad"],
}
# Metric names per task, in the order they appear in the result.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "pawsx": ("accuracy",),
    "xnli": ("accuracy",),
    "panx": ("f1", "precision", "recall"),
    "udpos": ("f1", "precision", "recall"),
    "bucc2018": ("f1", "precision", "recall"),
    "tatoeba": ("accuracy",),
    "xquad": ("exact_match", "f1"),
    "mlqa": ("exact_match", "f1"),
    "tydiqa": ("exact_match", "f1"),
}


def file_extension(task: str) -> str:
    """`json` for the QA tasks, `tsv` for the others."""
    return "json" if task in _QA_TASKS else "tsv"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _read_text(path: str) -> str:
    if not os.path.isfile(path):  # a folder, a device (/dev/zero), a pipe: never read
        raise EvaluationInputError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise EvaluationInputError(f"{path}: cannot read file: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        prefix = data[: error.start].decode("utf-8", errors="replace")
        line = len(_split_lines(prefix + "x"))  # the line the bad byte is on
        raise EvaluationInputError(
            f"{path}: line {line}: not valid UTF-8 ({error.reason}, byte 0x{data[error.start]:02x} "
            f"at offset {error.start})"
        ) from None


def _split_lines(text: str) -> list[str]:
    """Lines as Python's text files yield them (universal newlines: \\n, \\r\\n and \\r end a line;
    a final line break adds no empty line), without their line breaks."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _read_stripped_lines(path: str) -> list[str]:
    """Every line with its surrounding whitespace removed; blank lines are kept (they are lines)."""
    return [line.strip() for line in _split_lines(_read_text(path))]


def _read_sentences(path: str) -> list[tuple[int, list[str]]]:
    """One tag per line, a blank line closes a sentence (two in a row make an empty one), EOF closes
    the open one. Returns (line the sentence starts on, tags) per sentence."""
    sentences: list[tuple[int, list[str]]] = []
    tags: list[str] = []
    start = 1
    for number, line in enumerate(_read_stripped_lines(path), start=1):
        if line:
            if not tags:
                start = number
            tags.append(line)
        else:
            sentences.append((start if tags else number, tags))
            tags = []
    if tags:
        sentences.append((start, tags))
    return sentences


def _read_pairs(path: str) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for number, line in enumerate(_read_stripped_lines(path), start=1):
        columns = line.split("\t")
        if len(columns) != 2:
            found = "a blank line" if not line else f"{len(columns)} column(s)"
            raise EvaluationInputError(
                f"{path}: line {number}: expected 2 TAB-separated columns (<source-id>TAB<english-id>), found {found}"
            )
        pairs.add((columns[0], columns[1]))
    return pairs


def _read_json(path: str) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise EvaluationInputError(
            f"{path}: line {error.lineno} column {error.colno}: invalid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise EvaluationInputError(
            f"{path}: JSON nested too deeply to read (predictions and SQuAD labels nest a few levels)"
        ) from None
    except ValueError as error:  # an integer over Python's digit limit (sys.set_int_max_str_digits)
        raise EvaluationInputError(f"{path}: JSON value cannot be read ({str(error)[:120]})") from None


def _read_squad_questions(path: str) -> list[tuple[str, list[str]]]:
    """(question id, reference answer texts) for every question of a SQuAD v1.1 label file."""
    dataset = _read_json(path)
    where = "data"
    if isinstance(dataset, dict):
        if "data" not in dataset:
            raise EvaluationInputError(
                f"{path}: not a SQuAD v1.1 label file: expected an object with a 'data' list of articles, "
                "or a list of articles"
            )
        dataset = dataset["data"]
    elif isinstance(dataset, list):
        where = "articles"
    else:
        raise EvaluationInputError(
            f"{path}: not a SQuAD v1.1 label file: expected an object with a 'data' list of articles, "
            f"or a list of articles, found {type(dataset).__name__}"
        )

    def bad(location: str, problem: str) -> EvaluationInputError:
        return EvaluationInputError(f"{path}: {location}: {problem}")

    def items(value: Any, key: str, location: str) -> list:
        if not isinstance(value, dict):
            raise bad(location, f"expected an object, found {type(value).__name__}")
        inner = value.get(key)
        if not isinstance(inner, list):
            raise bad(location, f"expected a list under {key!r}")
        return inner

    if not isinstance(dataset, list):
        raise bad(where, f"expected a list of articles, found {type(dataset).__name__}")
    questions: list[tuple[str, list[str]]] = []
    for a, article in enumerate(dataset):
        loc_a = f"{where}[{a}]"
        for p, paragraph in enumerate(items(article, "paragraphs", loc_a)):
            loc_p = f"{loc_a}.paragraphs[{p}]"
            for q, qa in enumerate(items(paragraph, "qas", loc_p)):
                loc_q = f"{loc_p}.qas[{q}]"
                answers = items(qa, "answers", loc_q)
                qid = qa.get("id")
                if not isinstance(qid, str):
                    raise bad(loc_q, "question 'id' must be a string")
                if not answers:
                    raise bad(loc_q, f"question {qid!r} has no reference answer")
                texts = []
                for n, answer in enumerate(answers):
                    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
                        raise bad(f"{loc_q}.answers[{n}]", "expected an object with a string 'text'")
                    texts.append(answer["text"])
                questions.append((qid, texts))
    return questions


def _read_qa_predictions(path: str) -> dict[str, str]:
    predictions = _read_json(path)
    if not isinstance(predictions, dict):
        raise EvaluationInputError(
            f"{path}: expected one JSON object mapping question id -> answer string, "
            f"found {type(predictions).__name__}"
        )
    for qid, answer in predictions.items():
        if not isinstance(answer, str):
            raise EvaluationInputError(
                f"{path}: question id {qid!r}: the answer must be a string, found {type(answer).__name__}"
            )
    return predictions


# --------------------------------------------------------------------------------------------
# Scoring one language of one task
# --------------------------------------------------------------------------------------------

def _score_labels(prediction_file: str, label_file: str, lang: str) -> dict[str, float]:
    predictions = _read_stripped_lines(prediction_file)
    labels = _read_stripped_lines(label_file)
    if len(predictions) != len(labels):
        shorter = min(len(predictions), len(labels))
        raise EvaluationInputError(
            f"{prediction_file}: {len(predictions)} lines, but label file {label_file} has {len(labels)} "
            f"lines (they differ from line {shorter + 1} on)"
        )
    return {"accuracy": metrics.accuracy(predictions, labels)}


def _score_tags(prediction_file: str, label_file: str, lang: str) -> dict[str, float]:
    predictions = _read_sentences(prediction_file)
    labels = _read_sentences(label_file)
    if len(predictions) != len(labels):
        raise EvaluationInputError(
            f"{prediction_file}: {len(predictions)} sentences, but label file {label_file} has "
            f"{len(labels)} sentences (blank lines separate sentences)"
        )
    for number, ((p_line, p_tags), (l_line, l_tags)) in enumerate(zip(predictions, labels), start=1):
        if len(p_tags) != len(l_tags):
            raise EvaluationInputError(
                f"{prediction_file}: sentence {number} (line {p_line}) has {len(p_tags)} tags, but sentence "
                f"{number} of label file {label_file} (line {l_line}) has {len(l_tags)}"
            )
    if not labels:  # no sentence at all: every denominator is 0
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    scores = metrics.tagging_prf([tags for _, tags in predictions], [tags for _, tags in labels])
    return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}


def _score_pairs(prediction_file: str, label_file: str, lang: str) -> dict[str, float]:
    return metrics.bucc_prf(_read_pairs(prediction_file), _read_pairs(label_file))


def _qa_questions(prediction_file: str, label_file: str) -> list[tuple[list[str], str | None]]:
    predictions = _read_qa_predictions(prediction_file)
    return [(answers, predictions.get(qid)) for qid, answers in _read_squad_questions(label_file)]


def _score_squad(prediction_file: str, label_file: str, lang: str) -> dict[str, float]:
    return metrics.squad_em_f1(_qa_questions(prediction_file, label_file))


def _score_mlqa(prediction_file: str, label_file: str, lang: str) -> dict[str, float]:
    return metrics.mlqa_em_f1(_qa_questions(prediction_file, label_file), lang)


_SCORERS: dict[str, Callable[[str, str, str], dict[str, float]]] = {
    "pawsx": _score_labels,
    "xnli": _score_labels,
    "tatoeba": _score_labels,
    "udpos": _score_tags,
    "panx": _score_tags,
    "bucc2018": _score_pairs,
    "xquad": _score_squad,
    "tydiqa": _score_squad,
    "mlqa": _score_mlqa,
}


# --------------------------------------------------------------------------------------------
# Folders and aggregation
# --------------------------------------------------------------------------------------------

def _selected_tasks(tasks: list[str] | str | None) -> set[str]:
    if tasks is None:
        return set(OFFICIAL_LANGUAGES) | set(STAND_INS)
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    selected = set()
    for name in names:
        name = str(name).strip()
        if task_format(name) is None:
            raise EvaluationInputError(
                f"unknown task {name!r} in tasks; known tasks: {', '.join(OFFICIAL_LANGUAGES)}"
            )
        selected.add(name)
    return selected


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _score_task(task: str, prediction_dir: str, label_dir: str) -> dict[str, Any]:
    languages, task = scored_languages(task), task_format(task)  # a stand-in is scored as the task it imitates
    extension = file_extension(task)
    per_language: dict[str, dict[str, float]] = {}
    for lang in languages:
        name = f"test-{lang}.{extension}"
        label_file = os.path.join(label_dir, name)
        if not os.path.exists(label_file):
            continue
        prediction_file = os.path.join(prediction_dir, name)
        if not os.path.exists(prediction_file):
            raise EvaluationInputError(
                f"prediction file {prediction_file} is missing (its label file {label_file} exists)"
            )
        per_language[lang] = _SCORERS[task](prediction_file, label_file, lang)
    if not per_language:
        raise EvaluationInputError(
            f"{label_dir}: no label file for any {task} language (expected test-<lang>.{extension} with <lang> "
            f"one of {' '.join(languages)})"
        )

    names = TASK_METRICS[task]
    result: dict[str, Any] = {m: {lang: float(s[m]) for lang, s in per_language.items()} for m in names}
    for m in names:
        result[f"avg_{m}"] = _mean(list(result[m].values()))
    if task in _QA_TASKS:
        result["avg_metric"] = (result["avg_exact_match"] + result["avg_f1"]) / 2
    elif "f1" in names:
        result["avg_metric"] = result["avg_f1"]
    else:
        result["avg_metric"] = result["avg_accuracy"]
    return result


def score_folders(prediction_folder: str, label_folder: str, tasks: list[str] | None = None) -> dict:
    """Score the predictions in `prediction_folder` against the labels in `label_folder`.

    Returns a JSON-able dict: one key per scored task ({metric: {lang: score}}, avg_<metric>,
    avg_metric), then each group whose tasks were all scored, then `all_task` when all nine were.
    `tasks` limits scoring to those task names. Raises EvaluationInputError on unusable input.
    """
    selected = _selected_tasks(tasks)
    for folder, role in ((prediction_folder, "prediction"), (label_folder, "label")):
        if not os.path.isdir(folder):
            raise EvaluationInputError(f"{role} folder {folder} does not exist or is not a directory")

    result: dict[str, Any] = {}
    for task in [*OFFICIAL_LANGUAGES, *STAND_INS]:
        if task not in selected:
            continue
        prediction_dir = os.path.join(prediction_folder, task)
        label_dir = os.path.join(label_folder, task)
        if os.path.isdir(prediction_dir) and os.path.isdir(label_dir):
            result[task] = _score_task(task, prediction_dir, label_dir)

    result.update(aggregate_task_scores({task: result[task]["avg_metric"] for task in OFFICIAL_LANGUAGES if task in result}))
    return result


def nothing_to_score(prediction_folder: str, label_folder: str, tasks: list[str] | None = None) -> str:
    """One line for when score_folders found nothing to score: which task folders and files it expected."""
    selected = [task for task in OFFICIAL_LANGUAGES if task in _selected_tasks(tasks)]
    if not selected:
        return "nothing to score: --tasks names no task; name tasks, e.g. --tasks xnli,panx"
    layout = ", ".join(f"{task}/test-<lang>.{file_extension(task)}" for task in selected[:4]) + (", ..." if len(selected) > 4 else "")
    return (f"nothing to score: no task folder of {', '.join(selected)} is in both {prediction_folder} and {label_folder}; "
            f"expected the same <task>/test-<lang>.<ext> files in both (e.g. {layout})")


def aggregate_task_scores(task_scores: dict[str, float]) -> dict[str, float]:
    """XTREME's aggregation above the task level, from each task's score (its avg_metric): one entry
    per group of TASK_GROUPS whose tasks are all present (the mean of their scores), then
    `all_task` (the mean over the nine tasks) when all nine are. Other task names (e.g. synthetic
    tasks) are in no group. Pure: used by score_folders and by the study analysis."""
    aggregated: dict[str, float] = {}
    for group, group_tasks in TASK_GROUPS.items():
        if all(task in task_scores for task in group_tasks):
            aggregated[group] = _mean([task_scores[task] for task in group_tasks])
    if all(task in task_scores for task in OFFICIAL_LANGUAGES):
        aggregated["all_task"] = _mean([task_scores[task] for task in OFFICIAL_LANGUAGES])
    return aggregated


def xtreme_r_score(per_language: dict[str, dict[str, float]]) -> dict[str, Any] | None:
    """XTREME-R's average from {task: {language: score}} (QA tasks on F1, retrieval on accuracy or
    mAP@20 as each task's metric): each XTREME-R task's mean over its XTREME-R languages that have
    a score, then the mean over the tasks. `complete` only when all ten tasks are present with
    every one of their languages: only then is `score` the published XTREME-R score's analogue;
    otherwise it is over the tasks (and languages) present and says so. None without any XTREME-R
    task. Languages outside a task's XTREME-R list (e.g. a synthetic one) are left out."""
    tasks, coverage = {}, {}
    for task, languages in XTREME_R_LANGUAGES.items():
        scores = per_language.get(task) or {}
        present = [lang for lang in languages if lang in scores]
        if present:
            tasks[task] = _mean([scores[lang] for lang in present])
            coverage[task] = (len(present), len(languages))
    if not tasks:
        return None
    complete = len(tasks) == len(XTREME_R_LANGUAGES) and all(n == of for n, of in coverage.values())
    return {"score": _mean(list(tasks.values())), "tasks": tasks, "coverage": coverage, "complete": complete,
            "missing_tasks": [t for t in XTREME_R_LANGUAGES if t not in tasks]}


def xtreme_aggregate(per_language: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The XTREME aggregation from {task: {language: score}}, one score per language (for the QA
    tasks, pass (exact_match + f1) / 2 per language: its mean is the official avg_metric).

    Returns {"tasks": {task: mean over its languages}, **aggregate_task_scores(...) (groups and
    all_task where complete), "mean_over_tasks": the mean of the task means over the tasks given}.
    "mean_over_tasks" equals all_task when all nine XTREME tasks are given; for a subset, or for
    tasks outside XTREME, it is an XTREME-*style* score over the tasks present only, not comparable
    with published XTREME scores. Tasks with no language are left out.
    """
    tasks = {task: _mean(list(scores.values())) for task, scores in per_language.items() if scores}
    result: dict[str, Any] = {"tasks": tasks}
    result.update(aggregate_task_scores(tasks))
    result["mean_over_tasks"] = _mean(list(tasks.values())) if tasks else None
    return result
