"""The English intermediate tasks of Phang et al. (2020), in their real formats.

Same two sources as the targets (xstilts.tasks.xtreme_tasks): the HF hub when DataOptions.data_dir is
None, else the official files under <data_dir>/<task folder>/ (the first existing file of a
fixed list per split; DataOptions.files overrides it). Every task is English only: its
languages are ("en",). docs/tasks.md lists the files per split.

ANLI+ (`anli_plus`) is, as in the paper (after Nie et al. 2020), the concatenation of the
training sets of ANLI (rounds 1-3), MNLI, SNLI and FEVER-NLI; its dev set is ANLI's dev
(rounds 1-3). `xstilts.tasks.mixture.ANLI_PLUS` describes the same four as a sampled mixture for
multi-task training instead.

CCG needs the CCGbank, which the LDC licenses: it is read from a path the user gives, never
downloaded.
"""
from __future__ import annotations

import functools
import glob
import os
from collections import Counter

from xstilts.tasks.base import DataOptions, MultipleChoiceExample, TaskDataError, TaskSpec
from xstilts.tasks.formats import (hub_pairs, hub_split_names, hub_splits, hub_squad, local_or_hub, pair_examples,
                           read_ccg_auto, read_ccg_tsv, read_commonsenseqa, read_cosmosqa, read_hellaswag, read_json,
                           read_pairs, read_piqa, read_squad, read_swag, resolve_files, unique_question_ids)
from xstilts.tasks.xtreme_tasks import NLI_LABEL_MAP, NLI_LABELS

EN = ("en",)
QQP_LABELS = ("not_duplicate", "duplicate")
QQP_LABEL_MAP = {"0": "not_duplicate", "1": "duplicate"}
FEVER_LABEL_MAP = {"SUPPORTS": "entailment", "REFUTES": "contradiction", "NOT ENOUGH INFO": "neutral"}
NO_CONSENSUS = ("-",)  # SNLI/MNLI pairs whose annotators did not agree: left out, as usual


def _choices(n: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n))


def _pairs_reader(labels, label_map=None):
    def read(paths, split, language):
        examples = []
        for path in paths:
            examples += pair_examples(path, read_pairs(path), labels, label_map, NO_CONSENSUS)
        return examples
    return read


def _simple_locate(task: str, train: list[str], dev: list[str], fix: str):
    def locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
        return resolve_files(task, split, language, options, train if split == "train" else dev, fix)
    return locate


# ---------------------------------------------------------------------------------------------
# NLI: MNLI, SNLI, ANLI, FEVER-NLI, ANLI+
# ---------------------------------------------------------------------------------------------

_mnli_locate = _simple_locate(
    "mnli",
    ["mnli/train.tsv", "mnli/multinli_1.0/multinli_1.0_train.jsonl", "mnli/multinli_1.0_train.jsonl",
     "mnli/mnli_train_sample1000.json"],
    ["mnli/dev_matched.tsv", "mnli/multinli_1.0/multinli_1.0_dev_matched.jsonl", "mnli/multinli_1.0_dev_matched.jsonl",
     "mnli/kshot16-13_dev_matched.tsv"],
    "put GLUE's MNLI train.tsv/dev_matched.tsv (or MultiNLI 1.0's jsonl) in mnli/")


def _mnli_hub(split: str, language: str) -> list:
    return hub_pairs("mnli", "nyu-mll/glue", "mnli", ("train",) if split == "train" else ("validation_matched",),
                      "premise", "hypothesis", NLI_LABELS)


MNLI = TaskSpec(
    name="mnli", kind="classification", languages=EN, labels=NLI_LABELS, metric="accuracy",
    loader=local_or_hub("mnli", _mnli_locate, _pairs_reader(NLI_LABELS), _mnli_hub), max_length=128,
    hub=("nyu-mll/glue",), locate=_mnli_locate,
    description="MultiNLI (Williams et al. 2018): 3-way NLI over ten genres; dev = dev_matched.",
)

_snli_locate = _simple_locate(
    "snli",
    ["snli/snli_1.0_train.jsonl", "snli/snli_1.0/snli_1.0_train.jsonl", "snli/snli_1.0/snli_1.0_train.txt",
     "snli/snli_train_sample1000.json"],
    ["snli/snli_1.0_dev.jsonl", "snli/snli_1.0/snli_1.0_dev.jsonl", "snli/snli_1.0/snli_1.0_dev.txt"],
    "put SNLI 1.0's snli_1.0_<split>.jsonl in snli/")


def _snli_hub(split: str, language: str) -> list:
    return hub_pairs("snli", "stanfordnlp/snli", None, hub_split_names(split), "premise", "hypothesis", NLI_LABELS)


SNLI = TaskSpec(
    name="snli", kind="classification", languages=EN, labels=NLI_LABELS, metric="accuracy",
    loader=local_or_hub("snli", _snli_locate, _pairs_reader(NLI_LABELS), _snli_hub), max_length=128,
    hub=("stanfordnlp/snli",), locate=_snli_locate,
    description="SNLI 1.0 (Bowman et al. 2015): 3-way NLI on image captions; pairs without consensus left out.",
)

_ANLI_FIX = "put ANLI v1.0's R1-R3 folders (train.jsonl, dev.jsonl) in anli/ (facebookresearch/anli)"


def _anli_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if options.file_override("anli", split, language) is not None:
        return resolve_files("anli", split, language, options, [], _ANLI_FIX)
    if split == "train":
        candidates = ["anli/anli_v1.0/R{round}/train.jsonl", "anli/R{round}/train.jsonl"]
    else:
        candidates = ["anli/anli_v1.0/R{round}/dev.jsonl", "anli/R{round}/dev.jsonl",
                      "anli/ANLI_analysis_r{round}_dev.csv"]
    paths = ()
    for round_ in (1, 2, 3):  # the three rounds together, as in the paper
        paths += resolve_files("anli", split, language, options, candidates, _ANLI_FIX, round=str(round_))
    return paths


def _hub_pair_splits(task: str, dataset_id: str, config, splits, a: str, b: str, labels) -> list:
    examples = []
    for split in splits:
        examples += hub_pairs(task, dataset_id, config, (split,), a, b, labels)
    return examples


def _anli_hub(split: str, language: str) -> list:
    splits = ("train_r1", "train_r2", "train_r3") if split == "train" else ("dev_r1", "dev_r2", "dev_r3")
    return _hub_pair_splits("anli", "facebook/anli", None, splits, "premise", "hypothesis", NLI_LABELS)


ANLI = TaskSpec(
    name="anli", kind="classification", languages=EN, labels=NLI_LABELS, metric="accuracy",
    loader=local_or_hub("anli", _anli_locate, _pairs_reader(NLI_LABELS, NLI_LABEL_MAP), _anli_hub), max_length=128,
    hub=("facebook/anli",), locate=_anli_locate,
    description="Adversarial NLI (Nie et al. 2020): rounds R1-R3 together.",
)

_fever_locate = _simple_locate(
    "fever_nli", ["nli_fever/train_fitems.jsonl", "fever_nli/train_fitems.jsonl"],
    ["nli_fever/dev_fitems.jsonl", "fever_nli/dev_fitems.jsonl"],
    "put the NLI version of FEVER (nli_fever/{train,dev}_fitems.jsonl, from facebookresearch/anli) in nli_fever/")


def _fever_hub(split: str, language: str) -> list:
    # A community mirror of ANLI's nli_fever release (the official one is a zip, not on the hub).
    return hub_pairs("fever_nli", "pietrolesci/nli_fever", None, ("train",) if split == "train" else ("dev",),
                      "premise", "hypothesis", NLI_LABELS)


FEVER_NLI = TaskSpec(
    name="fever_nli", kind="classification", languages=EN, labels=NLI_LABELS, metric="accuracy",
    loader=local_or_hub("fever_nli", _fever_locate, _pairs_reader(NLI_LABELS, FEVER_LABEL_MAP), _fever_hub),
    max_length=128, hub=("pietrolesci/nli_fever",), locate=_fever_locate,
    description="FEVER-NLI (Nie et al. 2019): FEVER claims vs. evidence as NLI (SUPPORTS=entailment, REFUTES="
                "contradiction, NOT ENOUGH INFO=neutral); a part of ANLI+.",
)

ANLI_PLUS_PARTS = ("anli", "mnli", "snli", "fever_nli")
_PARTS = {"anli": ANLI, "mnli": MNLI, "snli": SNLI, "fever_nli": FEVER_NLI}


_ANY_NLI_LABEL = {**NLI_LABEL_MAP, **FEVER_LABEL_MAP}


def _anli_plus_load(split: str, language: str, options: DataOptions) -> list:
    if options.file_override("anli_plus", split, language) is not None:  # an ANLI+ file of its own
        paths = _anli_plus_locate(split, language, options)
        return _pairs_reader(NLI_LABELS, _ANY_NLI_LABEL)(paths, split, language)
    if split == "dev":
        return ANLI.loader(split, language, options)
    examples = []
    for name in ANLI_PLUS_PARTS:
        examples += _PARTS[name].loader(split, language, options)
    return examples


def _anli_plus_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if options.file_override("anli_plus", split, language) is not None:
        return resolve_files("anli_plus", split, language, options, [], "correct DataOptions.files['anli_plus:...']")
    if split == "dev":
        return _anli_locate(split, language, options)
    return tuple(path for name in ANLI_PLUS_PARTS for path in _PARTS[name].locate(split, language, options))


ANLI_PLUS = TaskSpec(
    name="anli_plus", kind="classification", languages=EN, labels=NLI_LABELS, metric="accuracy",
    loader=_anli_plus_load, max_length=128,
    hub=("facebook/anli", "nyu-mll/glue", "stanfordnlp/snli", "pietrolesci/nli_fever"), locate=_anli_plus_locate,
    description="ANLI+ (the paper's ANLI): train = ANLI R1-R3 + MNLI + SNLI + FEVER-NLI concatenated, in that "
                "order; dev = ANLI R1-R3 dev.",
)


# ---------------------------------------------------------------------------------------------
# QQP
# ---------------------------------------------------------------------------------------------

_qqp_locate = _simple_locate("qqp", ["qqp/train.tsv", "qqp/qqp_train_sample1000.json"], ["qqp/dev.tsv"],
                             "put GLUE's QQP train.tsv/dev.tsv in qqp/")


def _qqp_hub(split: str, language: str) -> list:
    return hub_pairs("qqp", "nyu-mll/glue", "qqp", hub_split_names(split), "question1", "question2", QQP_LABELS)


QQP = TaskSpec(
    name="qqp", kind="classification", languages=EN, labels=QQP_LABELS, metric="accuracy",
    loader=local_or_hub("qqp", _qqp_locate, _pairs_reader(QQP_LABELS, QQP_LABEL_MAP), _qqp_hub), max_length=128,
    hub=("nyu-mll/glue",), locate=_qqp_locate,
    description="Quora Question Pairs (GLUE): are two questions duplicates?",
)


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0
# ---------------------------------------------------------------------------------------------

_SQUAD_FIX = "put SQuAD's train-v<version>.json/dev-v<version>.json (rajpurkar.github.io/SQuAD-explorer) in squad/"
_squad1_locate = _simple_locate("squad_v1", ["squad/train-v1.1.json"], ["squad/dev-v1.1.json"], _SQUAD_FIX)
_squad2_locate = _simple_locate("squad_v2", ["squad/train-v2.0.json"], ["squad/dev-v2.0.json"], _SQUAD_FIX)


def _squad_reader(unanswerable: bool):
    def read(paths, split, language):
        examples = [example for path in paths for example in read_squad(path, unanswerable=unanswerable)]
        # each file's ids are unique already (read_squad); several files (a glob override) may share some
        return unique_question_ids(examples, ", ".join(paths)) if len(paths) > 1 else examples
    return read


SQUAD_V1 = TaskSpec(
    name="squad_v1", kind="span_qa", languages=EN, labels=(), metric="f1",
    loader=local_or_hub("squad_v1", _squad1_locate, _squad_reader(False),
                   lambda split, language: hub_squad("squad_v1", "rajpurkar/squad", None, hub_split_names(split))),
    max_length=384, hub=("rajpurkar/squad",), locate=_squad1_locate,
    description="SQuAD v1.1 (Rajpurkar et al. 2016): extractive QA on Wikipedia.",
)
SQUAD_V2 = TaskSpec(
    name="squad_v2", kind="span_qa", languages=EN, labels=(), metric="f1",
    loader=local_or_hub("squad_v2", _squad2_locate, _squad_reader(True),
                   lambda split, language: hub_squad("squad_v2", "rajpurkar/squad_v2", None, hub_split_names(split))),
    max_length=384, hub=("rajpurkar/squad_v2",), locate=_squad2_locate,
    description="SQuAD v2.0 (Rajpurkar et al. 2018): SQuAD v1.1 plus unanswerable questions (empty answers).",
)


# ---------------------------------------------------------------------------------------------
# Multiple choice: HellaSwag, SWAG, Cosmos QA, CommonsenseQA, PIQA
# ---------------------------------------------------------------------------------------------

def _mc_reader(read_one):
    def read(paths, split, language):
        return [example for path in paths for example in read_one(path)]
    return read


def _mc_rows(task: str, dataset_id: str, config, split: str, make) -> list[MultipleChoiceExample]:
    dataset, _ = hub_splits(task, dataset_id, config, hub_split_names(split))
    examples = []
    for row in dataset:
        example = make(row)
        if example is not None:
            examples.append(example)
    return examples


def _label_index(value, count: int) -> int | None:
    try:
        label = int(value)
    except (TypeError, ValueError):
        return None
    return label if 0 <= label < count else None  # unlabelled test rows ("" or -1) are dropped


def _hellaswag_row(row):
    label = _label_index(row["label"], 4)
    if label is None:
        return None
    return MultipleChoiceExample(row["ctx_a"], tuple(f"{row['ctx_b']} {e}".strip() for e in row["endings"]), label)


_hellaswag_locate = _simple_locate("hellaswag", ["hellaswag/hellaswag_train.jsonl"], ["hellaswag/hellaswag_val.jsonl"],
                                   "put rowanz/hellaswag's data/hellaswag_{train,val}.jsonl in hellaswag/")
HELLASWAG = TaskSpec(
    name="hellaswag", kind="multiple_choice", languages=EN, labels=_choices(4), metric="accuracy",
    loader=local_or_hub("hellaswag", _hellaswag_locate, _mc_reader(read_hellaswag),
                   lambda split, language: _mc_rows("hellaswag", "Rowan/hellaswag", None, split, _hellaswag_row)),
    max_length=128, hub=("Rowan/hellaswag",), locate=_hellaswag_locate,
    description="HellaSwag (Zellers et al. 2019): pick the right continuation (ctx_b + ending) of ctx_a, 4 choices.",
)


def _swag_row(row):
    label = _label_index(row["label"], 4)
    if label is None:
        return None
    return MultipleChoiceExample(row["sent1"], tuple(f"{row['sent2']} {row[f'ending{i}']}".strip() for i in range(4)),
                                 label)


_swag_locate = _simple_locate("swag", ["swag/train.csv", "swag/data/train.csv"], ["swag/val.csv", "swag/data/val.csv"],
                              "put rowanz/swagaf's data/{train,val}.csv in swag/")
SWAG = TaskSpec(
    name="swag", kind="multiple_choice", languages=EN, labels=_choices(4), metric="accuracy",
    loader=local_or_hub("swag", _swag_locate, _mc_reader(read_swag),
                   lambda split, language: _mc_rows("swag", "allenai/swag", "regular", split, _swag_row)),
    max_length=128, hub=("allenai/swag",), locate=_swag_locate,
    description="SWAG (Zellers et al. 2018): pick the right continuation (sent2 + ending) of sent1, 4 choices.",
)


def _cosmos_row(row):
    label = _label_index(row["label"], 4)
    if label is None:
        return None
    return MultipleChoiceExample(row["context"], tuple(row[f"answer{i}"] for i in range(4)), label, row["question"])


_cosmos_locate = _simple_locate("cosmosqa", ["cosmosqa/train.csv", "cosmosqa/data/train.csv"],
                                ["cosmosqa/valid.csv", "cosmosqa/data/valid.csv"],
                                "put wilburOne/cosmosqa's data/{train,valid}.csv in cosmosqa/")
COSMOSQA = TaskSpec(
    name="cosmosqa", kind="multiple_choice", languages=EN, labels=_choices(4), metric="accuracy",
    loader=local_or_hub("cosmosqa", _cosmos_locate, _mc_reader(read_cosmosqa),
                   lambda split, language: _mc_rows("cosmosqa", "allenai/cosmos_qa", None, split, _cosmos_row)),
    max_length=256, hub=("allenai/cosmos_qa",), locate=_cosmos_locate,
    description="Cosmos QA (Huang et al. 2019): commonsense reading comprehension, 4 answers; question kept apart.",
)


def _csqa_row(row):
    keys, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
    if row["answerKey"] not in keys:
        return None
    return MultipleChoiceExample(row["question"], tuple(texts), keys.index(row["answerKey"]))


_csqa_locate = _simple_locate("commonsenseqa", ["commonsenseqa/train_rand_split.jsonl"],
                              ["commonsenseqa/dev_rand_split.jsonl"],
                              "put CommonsenseQA's {train,dev}_rand_split.jsonl in commonsenseqa/")
COMMONSENSEQA = TaskSpec(
    name="commonsenseqa", kind="multiple_choice", languages=EN, labels=_choices(5), metric="accuracy",
    loader=local_or_hub("commonsenseqa", _csqa_locate, _mc_reader(read_commonsenseqa),
                   lambda split, language: _mc_rows("commonsenseqa", "tau/commonsense_qa", None, split, _csqa_row)),
    max_length=128, hub=("tau/commonsense_qa",), locate=_csqa_locate,
    description="CommonsenseQA (Talmor et al. 2019): 5-way commonsense questions (random split).",
)


def _piqa_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    (questions,) = resolve_files("piqa", split, language, options,
                                 ["piqa/train.jsonl"] if split == "train" else ["piqa/valid.jsonl"],
                                 "put ybisk/ybisk.github.io's piqa/data/{train,valid}.jsonl and -labels.lst in piqa/")
    return questions, questions[: -len(".jsonl")] + "-labels.lst"


def _piqa_row(row):
    label = _label_index(row["label"], 2)
    return None if label is None else MultipleChoiceExample(row["goal"], (row["sol1"], row["sol2"]), label)


PIQA = TaskSpec(
    name="piqa", kind="multiple_choice", languages=EN, labels=_choices(2), metric="accuracy",
    loader=local_or_hub("piqa", _piqa_locate, lambda paths, split, language: read_piqa(*paths),
                   lambda split, language: _mc_rows("piqa", "ybisk/piqa", None, split, _piqa_row)),
    max_length=128, hub=("ybisk/piqa",), locate=_piqa_locate,
    description="PIQA (Bisk et al. 2020): physical commonsense, pick the solution (sol1/sol2) for a goal.",
)


# ---------------------------------------------------------------------------------------------
# CCG supertagging (CCGbank, LDC licensed)
# ---------------------------------------------------------------------------------------------

CCG_SECTIONS = {"train": tuple(f"{s:02d}" for s in range(2, 22)), "dev": ("00",)}
_CCG_MISSING = ("ccg: the CCGbank (LDC2005T13) is licensed by the LDC, so it is neither shipped nor downloaded; "
                "fix: obtain it from the LDC and put it in <data_dir>/ccg/ (ccgbank_1_1/data/AUTO/<section>/*.auto, "
                "or jiant's ccg.train/ccg.dev with tags_to_id.json), or point DataOptions.files['ccg:train'] and "
                "['ccg:dev'] at its data/AUTO folder")
_AUTO_ROOTS = ("ccg/ccgbank_1_1/data/AUTO", "ccg/data/AUTO", "ccg/AUTO")


def _auto_files(folder: str, split: str) -> tuple[str, ...]:
    """The .auto files of the split's sections under an AUTO root, or of any folder below it."""
    sections = [os.path.join(folder, s) for s in CCG_SECTIONS[split]]
    if any(os.path.isdir(s) for s in sections):
        return tuple(f for s in sections for f in sorted(glob.glob(os.path.join(s, "*.auto"))))
    return tuple(sorted(glob.glob(os.path.join(folder, "**", "*.auto"), recursive=True)))


def _ccg_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if options.file_override("ccg", split, language) is not None:
        given = resolve_files("ccg", split, language, options, [], _CCG_MISSING)
        found = tuple(f for path in given for f in (_auto_files(path, split) if os.path.isdir(path) else (path,)))
    elif options.data_dir is None:
        raise TaskDataError(_CCG_MISSING)
    else:
        jiant = os.path.join(options.data_dir, "ccg", f"ccg.{split}")
        found = (jiant,) if os.path.isfile(jiant) else ()
        for root in _AUTO_ROOTS:
            if not found and os.path.isdir(os.path.join(options.data_dir, root)):
                found = _auto_files(os.path.join(options.data_dir, root), split)
    if not found:
        raise TaskDataError(_CCG_MISSING)
    return found


def _tags_to_id(path: str) -> str | None:
    candidate = os.path.join(os.path.dirname(path), "tags_to_id.json")
    return candidate if os.path.isfile(candidate) else None


def _ccg_read(paths, split, language) -> list:
    examples = []
    for path in paths:
        if path.endswith(".auto"):
            examples += read_ccg_auto(path)
        else:
            tags = _tags_to_id(path)
            examples += read_ccg_tsv(path, _ordered_tags(tags) if tags else None)
    return examples


def _ordered_tags(tags_to_id_path: str) -> tuple[str, ...]:
    mapping = read_json(tags_to_id_path, 'give a JSON object {"<supertag>": <id>, ...}')
    if not isinstance(mapping, dict):
        raise TaskDataError(f"{tags_to_id_path}: line 1: expected a JSON object of supertag ids; "
                            f"fix: give {{\"<supertag>\": <id>, ...}}")
    return tuple(tag for tag, _ in sorted(mapping.items(), key=lambda item: int(item[1])))


@functools.lru_cache(maxsize=8)
def _ccg_labels_cached(key: tuple) -> tuple[str, ...]:
    paths = [path for path, _ in key]
    tags = next((_tags_to_id(p) for p in paths if not p.endswith(".auto") and _tags_to_id(p)), None)
    if tags:
        return _ordered_tags(tags)
    counts: Counter = Counter()
    for path in paths:
        reader = read_ccg_auto if path.endswith(".auto") else read_ccg_tsv
        for example in reader(path):
            counts.update(example.tags)
    return tuple(tag for tag, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def ccg_labels(options: DataOptions) -> tuple[str, ...]:
    """The supertag set: jiant's tags_to_id.json in id order when there is one, else every
    supertag of the train and dev data, most frequent first (ties by name)."""
    paths = _ccg_locate("train", "en", options) + _ccg_locate("dev", "en", options)
    return _ccg_labels_cached(tuple((p, os.path.getmtime(p)) for p in paths))


CCG = TaskSpec(
    name="ccg", kind="tagging", languages=EN, labels=(), metric="accuracy", tag_metric="accuracy",
    loader=lambda split, language, options: _ccg_read(_ccg_locate(split, language, options), split, language),
    max_length=128, locate=_ccg_locate, label_source=ccg_labels,
    description="CCG supertagging on CCGbank (Hockenmaier & Steedman 2007; LDC licensed, user-provided): train "
                "sections 02-21, dev 00. Labels come from the data: use TaskSpec.resolved(options).",
)

INTERMEDIATE_TASKS: tuple[TaskSpec, ...] = (MNLI, ANLI_PLUS, QQP, SQUAD_V1, SQUAD_V2, HELLASWAG, CCG, COSMOSQA,
                                            COMMONSENSEQA, SWAG, PIQA, SNLI, ANLI, FEVER_NLI)
