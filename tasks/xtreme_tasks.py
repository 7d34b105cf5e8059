"""The XTREME targets (and the XTREME-R additions XCOPA, LAReQA, Mewsli-X), in their real formats.

One TaskSpec per task, each with one loader and two sources:
  - DataOptions.data_dir is None: the public HF hub dataset (`datasets.load_dataset`, imported
    lazily), "train" from its train split, "dev" from its validation split;
  - DataOptions.data_dir is set: the official files under <data_dir>/<task folder>/, in the
    XTREME download layout (google-research/xtreme scripts/download_data.sh), the original
    release layouts, or the layout of the shared real samples (../shared/data). For every split
    and language the first existing file of a fixed list is read; DataOptions.files overrides
    it. docs/tasks.md lists the files, the split each one plays, and why.

"dev" is the labelled data a language is evaluated on zero-shot (and, for the training
language, the data models are selected on). XTREME's own test files carry no labels, so
"dev" is never one of them.

"test" (the nine XTREME tasks; TaskSpec.splits) is what `xstilts predict` writes submission
files for: the test sets of the original releases (labelled) and XTREME's download layout, and
the hub's test split. Where XTREME evaluates on a set this module already reads as "dev" (XQuAD,
TyDiQA-GoldP's dev set, Tatoeba, and UD treebanks without a dev file), "test" is that set too.
"""
from __future__ import annotations

import os
import re

from xstilts.tasks.base import (SPLITS_WITH_TEST, DataOptions, MultipleChoiceExample, RetrievalCorpus, TaggingExample,
                                TaskDataError, TaskSpec)
from xstilts.tasks.formats import (class_name, data_error, hub_pairs, hub_split_names, hub_splits, hub_squad, lareqa_corpus,
                           local_or_hub, pair_examples, read_bucc, read_conllu, read_copa, read_mewsli_entities,
                           read_mewsli_mentions, read_pairs, read_squad, read_tatoeba, read_token_tags, resolve_files,
                           unique_question_ids)
from xstilts.tasks.formats import _read_id_sentences  # BUCC's "<id>TAB<sentence>" files (a test set has no gold)
from xstilts.tasks.xtreme_eval import OFFICIAL_LANGUAGES

NLI_LABELS = ("entailment", "neutral", "contradiction")
# Raw labels of the official files -> ours: XNLI-MT's "contradictory", ANLI's one-letter codes.
NLI_LABEL_MAP = {"contradictory": "contradiction", "e": "entailment", "n": "neutral", "c": "contradiction"}
PAWSX_LABELS = ("0", "1")  # 1: the two sentences are paraphrases (as in the files and XTREME's predictions)
PANX_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
UPOS_LABELS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
               "SCONJ", "SYM", "VERB", "X")

XCOPA_LANGUAGES = tuple("et ht id it qu sw ta th tr vi zh".split())
LAREQA_LANGUAGES = OFFICIAL_LANGUAGES["xquad"]  # XQuAD-R: the XQuAD languages
MEWSLIX_LANGUAGES = tuple("ar de en es fa ja pl ro ta tr uk".split())

# google/xtreme names its UD-POS configs by language name.
UDPOS_CONFIG_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "kk": "Kazakh", "ko": "Korean", "mr": "Marathi", "nl": "Dutch", "pt": "Portuguese", "ru": "Russian",
    "ta": "Tamil", "te": "Telugu", "th": "Thai", "tl": "Tagalog", "tr": "Turkish", "ur": "Urdu",
    "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese",
}
# LASER's Tatoeba files (and google/xtreme's tatoeba configs) use ISO 639-3 codes.
TATOEBA_CODES = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa", "et": "est",
    "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind",
    "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar",
    "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl",
    "tr": "tur", "ur": "urd", "vi": "vie", "zh": "cmn",
}
# TyDiQA-GoldP question ids start with the language's English name.
TYDIQA_NAMES = {"ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish", "id": "indonesian",
                "ko": "korean", "ru": "russian", "sw": "swahili", "te": "telugu"}


def _no_train(task: str, why: str) -> TaskDataError:
    return TaskDataError(f"{task}: there is no 'train' split ({why}); fix: load 'dev' (retrieval tasks are "
                         f"evaluated with the phase-2 encoder, not trained)")


def _hub_split(split: str) -> tuple[str, ...]:
    """The hub split(s) our split reads: train -> train, dev -> validation, test -> test."""
    return ("test",) if split == "test" else hub_split_names(split)


def _is_dev_file(path: str) -> bool:
    return re.search(r"(^|[._-])dev([._-]|$)", os.path.basename(path)) is not None


# ---------------------------------------------------------------------------------------------
# XNLI
# ---------------------------------------------------------------------------------------------

_XNLI_FIX = "run XTREME's download_data.sh (xnli/) or use the shared samples"


def _xnli_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        candidates = ["xnli/train-{lang}.tsv", "xnli/XNLI-MT-1.0/multinli/multinli.train.{lang}.tsv",
                      "xnli/test-{lang}.labeled.tsv"]
    elif split == "test":  # XNLI-1.0's labelled test set, then XTREME's test-<lang>.tsv (labels removed)
        candidates = ["xnli/XNLI-1.0/xnli.test.tsv", "xnli/{lang}.test.tsv", "xnli/test-{lang}.tsv"]
    else:
        candidates = ["xnli/dev-{lang}.tsv", "xnli/XNLI-1.0/xnli.dev.tsv", "xnli/{lang}.dev.tsv"]
    return resolve_files("xnli", split, language, options, candidates, _XNLI_FIX)


def _read_pairs(labels, label_map=None, skip=()):
    def read(paths, split, language):
        examples = []
        for path in paths:
            examples += pair_examples(path, read_pairs(path, language), labels, label_map, skip)
        return examples
    return read


def _xnli_hub(split: str, language: str) -> list:
    return hub_pairs("xnli", "facebook/xnli", language, _hub_split(split), "premise", "hypothesis", NLI_LABELS)


XNLI = TaskSpec(
    name="xnli", kind="classification", languages=OFFICIAL_LANGUAGES["xnli"], labels=NLI_LABELS, metric="accuracy",
    loader=local_or_hub("xnli", _xnli_locate, _read_pairs(NLI_LABELS, NLI_LABEL_MAP), _xnli_hub), max_length=128,
    hub=("facebook/xnli",), locate=_xnli_locate, splits=SPLITS_WITH_TEST,
    description="XNLI (Conneau et al. 2018): sentence-pair NLI, trained in English, evaluated zero-shot in 15 languages.",
)


# ---------------------------------------------------------------------------------------------
# PAWS-X
# ---------------------------------------------------------------------------------------------

_PAWSX_FIX = "run XTREME's download_data.sh (pawsx/) or use the shared samples"
_PAWSX_TRAIN = ["pawsx/train-{lang}.tsv", "pawsx/x-final/{lang}/train.tsv", "pawsx/dev-{lang}.tsv"]


def _pawsx_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        return resolve_files("pawsx", split, language, options, _PAWSX_TRAIN, _PAWSX_FIX)
    if split == "test":  # the release's labelled test_2k, then XTREME's test-<lang>.tsv (labels removed)
        return resolve_files("pawsx", split, language, options,
                             ["pawsx/x-final/{lang}/test_2k.tsv", "pawsx/{lang}.test.tsv", "pawsx/test-{lang}.hf-labeled.tsv",
                              "pawsx/test-{lang}.labeled.tsv", "pawsx/test-{lang}.tsv"], _PAWSX_FIX)
    # PAWS-X dev/test sets are translations of the English dev/test sets: when the English
    # training data is itself a dev file (the shared samples), evaluate on the test files only.
    try:
        train = resolve_files("pawsx", "train", "en", options, _PAWSX_TRAIN, _PAWSX_FIX)
        train_is_dev = any(_is_dev_file(path) for path in train)
    except TaskDataError:
        train_is_dev = False
    tests = ["pawsx/x-final/{lang}/test_2k.tsv", "pawsx/{lang}.test.tsv", "pawsx/test-{lang}.hf-labeled.tsv",
             "pawsx/test-{lang}.labeled.tsv"]
    devs = ["pawsx/dev-{lang}.tsv", "pawsx/x-final/{lang}/dev_2k.tsv", "pawsx/{lang}.dev.tsv"]
    if train_is_dev:
        fix = ("the English training file is a PAWS-X dev file, whose translations are the other dev files, so "
               "evaluation reads labelled test files only: add <lang>.test.tsv or test-<lang>.hf-labeled.tsv")
        return resolve_files("pawsx", split, language, options, tests, fix)
    return resolve_files("pawsx", split, language, options, devs, _PAWSX_FIX)


def _pawsx_hub(split: str, language: str) -> list:
    return hub_pairs("pawsx", "google-research-datasets/paws-x", language, _hub_split(split), "sentence1",
                      "sentence2", PAWSX_LABELS)


PAWSX = TaskSpec(
    name="pawsx", kind="classification", languages=OFFICIAL_LANGUAGES["pawsx"], labels=PAWSX_LABELS,
    metric="accuracy", loader=local_or_hub("pawsx", _pawsx_locate, _read_pairs(PAWSX_LABELS), _pawsx_hub), max_length=128,
    hub=("google-research-datasets/paws-x",), locate=_pawsx_locate, splits=SPLITS_WITH_TEST,
    description="PAWS-X (Yang et al. 2019): adversarial paraphrase identification (label 1: paraphrase), 7 languages.",
)


# ---------------------------------------------------------------------------------------------
# UD-POS and PAN-X (tagging)
# ---------------------------------------------------------------------------------------------

_UDPOS_FIX = "run XTREME's download_data.sh (udpos/) or put the UD treebanks' .conllu files in udpos/"


def _udpos_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    # CoNLL-U files directly in udpos/, in treebank folders (udpos/UD_English-EWT/) or in the
    # unpacked release (udpos/ud-treebanks-v2.5/UD_English-EWT/)
    folders = ("udpos/", "udpos/UD_*/", "udpos/ud-treebanks-v*/UD_*/")
    if split == "train":
        candidates = (["udpos/train-{lang}.tsv"] + [f + "{lang}_*-ud-train.conllu" for f in folders]
                      + [f + "{lang}_*-ud-dev.conllu" for f in folders])
    elif split == "test":  # the treebanks' test files, then XTREME's test-<lang>.tsv (tags removed)
        candidates = [f + "{lang}_*-ud-test.conllu" for f in folders] + ["udpos/test-{lang}.tsv"]
    else:
        candidates = ["udpos/dev-{lang}.tsv"] + [f + "{lang}_*-ud-test.conllu" for f in folders]
    return resolve_files("udpos", split, language, options, candidates, _UDPOS_FIX)


def _udpos_read(paths, split, language) -> list:
    examples = []
    for path in paths:
        if path.endswith(".conllu"):
            examples += read_conllu(path, UPOS_LABELS)
        else:
            examples += read_token_tags(path, UPOS_LABELS)
    return examples


def _hub_tags(task: str, config: str, split: str, tag_column: str, labels) -> list:
    splits = {"train": ("train",), "test": ("test",)}.get(split, ("validation", "test"))
    dataset, _ = hub_splits(task, "google/xtreme", config, splits)
    examples = []
    for row in dataset:
        tags = tuple(class_name(dataset, tag_column, t) for t in row[tag_column])
        examples.append(TaggingExample(tuple(row["tokens"]), tags))
    return examples


def _udpos_hub(split: str, language: str) -> list:
    return _hub_tags("udpos", f"udpos.{UDPOS_CONFIG_NAMES[language]}", split, "pos_tags", UPOS_LABELS)


UDPOS = TaskSpec(
    name="udpos", kind="tagging", languages=OFFICIAL_LANGUAGES["udpos"], labels=UPOS_LABELS, metric="f1",
    loader=local_or_hub("udpos", _udpos_locate, _udpos_read, _udpos_hub), max_length=128,
    hub=("google/xtreme",), locate=_udpos_locate, splits=SPLITS_WITH_TEST,
    description="UD-POS (Universal Dependencies v2.5): universal POS tagging, 33 languages.",
)

_PANX_FIX = "run XTREME's download_data.sh (panx/, needs AmazonPhotos.zip) or use the shared samples"


def _panx_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    # test: WikiANN's raw <lang>-test (tagged) first; XTREME's test-<lang>.tsv has the tags removed
    candidates = ["panx/" + split + "-{lang}.tsv", "panx/{lang}-" + split]
    return resolve_files("panx", split, language, options, candidates[::-1] if split == "test" else candidates,
                         _PANX_FIX)


def _panx_read(paths, split, language) -> list:
    examples = []
    for path in paths:  # WikiANN's raw files (panx/<lang>-<split>) prefix every token with "<lang>:"
        raw = os.path.basename(path) == f"{language}-{split}"
        examples += read_token_tags(path, PANX_LABELS, strip_prefix=f"{language}:" if raw else None)
    return examples


def _panx_hub(split: str, language: str) -> list:
    return _hub_tags("panx", f"PAN-X.{language}", split, "ner_tags", PANX_LABELS)


PANX = TaskSpec(
    name="panx", kind="tagging", languages=OFFICIAL_LANGUAGES["panx"], labels=PANX_LABELS, metric="f1",
    loader=local_or_hub("panx", _panx_locate, _panx_read, _panx_hub), max_length=128,
    hub=("google/xtreme",), locate=_panx_locate, splits=SPLITS_WITH_TEST,
    description="PAN-X / WikiANN (Pan et al. 2017; Rahimi et al. 2019 splits): IOB2 NER (PER, ORG, LOC), 40 languages.",
)


# ---------------------------------------------------------------------------------------------
# XQuAD, MLQA, TyDiQA-GoldP (extractive QA)
# ---------------------------------------------------------------------------------------------

_QA_TRAIN = ["squad/train-v1.1.json", "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.{lang}.train.json",
             "tydiqa/tydiqa.goldp.{lang}.train.json", "tydiqa/tydiqa-goldp-v1.1-train.json"]
# translate-train: XTREME's machine-translated SQuAD v1.1 (its download layout), never English.
_SQUAD_TRANSLATED = ["squad/translate-train/squad.translate.train.en-{lang}.json",
                     "squad/squad.translate.train.en-{lang}.json"]
_QA_FIX = "run XTREME's download_data.sh (squad/, xquad/, mlqa/, tydiqa/) or use the shared samples"
_QA_TRANSLATED_FIX = ("translate-train needs XTREME's translated SQuAD for this language "
                      "(squad/translate-train/squad.translate.train.en-{lang}.json from XTREME's translations); "
                      "supply it or search target_train: english only")


def _qa_train(task: str, language: str, options: DataOptions, translated: list[str]) -> tuple[str, ...]:
    """The training file(s) of a QA target in `language`: SQuAD (or TyDiQA's English) for English,
    translated files for any other language (English is never substituted)."""
    if language == "en":
        return resolve_files(task, "train", language, options, _QA_TRAIN, _QA_FIX)
    return resolve_files(task, "train", language, options, translated, _QA_TRANSLATED_FIX.format(lang=language))


def _no_translated_hub(task: str, language: str) -> TaskDataError:
    return TaskDataError(f"{task}: no {language} training data on the HF hub (it has English SQuAD only); fix: "
                         + _QA_TRANSLATED_FIX.format(lang=language) + ", with data_dir or data_files")


def _qa_read(paths, split, language) -> list:
    examples = []
    for path in paths:
        # TyDiQA's combined files hold every language: keep this one's questions.
        combined = os.path.basename(path) in ("tydiqa-goldp-v1.1-train.json", "tydiqa-goldp-v1.1-dev.json")
        found = read_squad(path, id_language=TYDIQA_NAMES.get(language) if combined else None)
        if combined and not found:
            raise data_error(path, None, f"no question of language '{language}' (ids starting with "
                             f"'{TYDIQA_NAMES.get(language)}-')", "use TyDiQA-GoldP v1.1's complete file")
        examples += found
    # each file's ids are unique already (read_squad); several files (a glob override) may share some
    return unique_question_ids(examples, ", ".join(paths)) if len(paths) > 1 else examples


def _squad_train_hub(task: str, language: str = "en") -> list:
    if language != "en":
        raise _no_translated_hub(task, language)
    return hub_squad(task, "rajpurkar/squad", None, ("train",))


def _xquad_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        return _qa_train("xquad", language, options, _SQUAD_TRANSLATED)
    return resolve_files("xquad", split, language, options, ["xquad/xquad.{lang}.json"], _QA_FIX)


def _xquad_hub(split: str, language: str) -> list:
    if split == "train":
        return _squad_train_hub("xquad", language)
    return hub_squad("xquad", "google/xquad", f"xquad.{language}", ("validation",))


XQUAD = TaskSpec(
    name="xquad", kind="span_qa", languages=OFFICIAL_LANGUAGES["xquad"], labels=(), metric="f1",
    loader=local_or_hub("xquad", _xquad_locate, _qa_read, _xquad_hub), max_length=384,
    hub=("google/xquad", "rajpurkar/squad"), locate=_xquad_locate, translated_train_on_hub=False, splits=SPLITS_WITH_TEST,
    description="XQuAD (Artetxe et al. 2020): SQuAD v1.1 dev paragraphs translated; trained on SQuAD v1.1.",
)


def _mlqa_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        return _qa_train("mlqa", language, options, _SQUAD_TRANSLATED)
    candidates = [
        "mlqa/MLQA_V1/dev/dev-context-{lang}-question-{lang}.json", "mlqa/dev-context-{lang}-question-{lang}.json",
        "mlqa/mlqa.{lang}.{lang}.validation.squad.json"]
    if split == "test":
        candidates = ["mlqa/MLQA_V1/test/test-context-{lang}-question-{lang}.json",
                      "mlqa/test-context-{lang}-question-{lang}.json", "mlqa/mlqa.{lang}.{lang}.test.squad.json"]
    return resolve_files("mlqa", split, language, options, candidates, _QA_FIX)


def _mlqa_hub(split: str, language: str) -> list:
    if split == "train":
        return _squad_train_hub("mlqa", language)
    return hub_squad("mlqa", "facebook/mlqa", f"mlqa.{language}.{language}", ("test",) if split == "test" else ("validation",))


MLQA = TaskSpec(
    name="mlqa", kind="span_qa", languages=OFFICIAL_LANGUAGES["mlqa"], labels=(), metric="f1",
    loader=local_or_hub("mlqa", _mlqa_locate, _qa_read, _mlqa_hub), max_length=384, answer_normalization="mlqa",
    hub=("facebook/mlqa", "rajpurkar/squad"), locate=_mlqa_locate, translated_train_on_hub=False, splits=SPLITS_WITH_TEST,
    description="MLQA (Lewis et al. 2020): extractive QA, same-language context and question; trained on SQuAD v1.1.",
)


def _tydiqa_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        # TyDiQA-GoldP has gold training data per language (its own split, not a translation),
        # then XTREME's translated English training set.
        return _qa_train("tydiqa", language, options, [
            "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.{lang}.train.json", "tydiqa/tydiqa.goldp.{lang}.train.json",
            "tydiqa/translate-train/tydiqa.translate.train.en-{lang}.json"])
    candidates = [
        "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{name}.json", "tydiqa/tydiqa-goldp-v1.1-dev.json",
        "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json", "tydiqa/tydiqa.goldp.{lang}.dev.json"]
    return resolve_files("tydiqa", split, language, options, candidates, _QA_FIX, name=TYDIQA_NAMES[language])


def _tydiqa_hub(split: str, language: str) -> list:
    if split == "train":
        return _squad_train_hub("tydiqa", language)
    return hub_squad("tydiqa", "google-research-datasets/tydiqa", "secondary_task", ("validation",),
                      id_language=TYDIQA_NAMES[language])


TYDIQA = TaskSpec(
    name="tydiqa", kind="span_qa", languages=OFFICIAL_LANGUAGES["tydiqa"], labels=(), metric="f1",
    loader=local_or_hub("tydiqa", _tydiqa_locate, _qa_read, _tydiqa_hub), max_length=384,
    hub=("google-research-datasets/tydiqa", "rajpurkar/squad"), locate=_tydiqa_locate, translated_train_on_hub=False,
    splits=SPLITS_WITH_TEST,
    description="TyDiQA-GoldP (Clark et al. 2020): typologically diverse extractive QA; trained on SQuAD v1.1.",
)


# ---------------------------------------------------------------------------------------------
# BUCC 2018 and Tatoeba (retrieval)
# ---------------------------------------------------------------------------------------------

_BUCC_FIX = "run XTREME's download_data.sh (bucc2018/) or use the shared samples"


def _bucc_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        raise _no_train("bucc2018", "BUCC has sample/dev and test sets only")
    candidates = ["bucc2018/{lang}-en.dev.{lang}", "bucc2018/{lang}-en/{lang}-en.sample.{lang}"]
    if split == "test":  # BUCC's "training" set is XTREME's test set (download_data.sh renames it, gold removed)
        candidates = ["bucc2018/{lang}-en.test.{lang}", "bucc2018/{lang}-en/{lang}-en.training.{lang}"]
    (source,) = resolve_files("bucc2018", split, language, options, candidates, _BUCC_FIX)
    stem = source[: -len(language)]
    if split == "test" and not os.path.exists(stem + "gold"):
        return source, stem + "en"  # XTREME's test set has no gold: sentences to mine only
    return source, stem + "en", stem + "gold"


def _bucc_read(paths, split, language) -> list:
    if len(paths) == 2:  # a test set without gold pairs (what `xstilts predict` mines)
        source_ids, source_sentences, _ = _read_id_sentences(paths[0])
        target_ids, target_sentences, _ = _read_id_sentences(paths[1])
        return [RetrievalCorpus(tuple(source_ids), tuple(source_sentences), tuple(target_ids), tuple(target_sentences), ())]
    return [read_bucc(*paths)]


def _bucc_hub(split: str, language: str) -> list:
    if split == "train":
        raise _no_train("bucc2018", "BUCC has sample/dev and test sets only")
    # google/xtreme's bucc18 configs hold only the gold pairs: a corpus without BUCC's distractor
    # sentences (an easier search than the official one; use data_dir for the real task).
    dataset, _ = hub_splits("bucc2018", "google/xtreme", f"bucc18.{language}", _hub_split(split))
    sources = tuple(dataset["source_sentence"])
    targets = tuple(dataset["target_sentence"])
    source_ids = tuple(f"{language}-{i:09d}" for i in range(len(sources)))
    target_ids = tuple(f"en-{i:09d}" for i in range(len(targets)))
    return [RetrievalCorpus(source_ids, sources, target_ids, targets, tuple(zip(source_ids, target_ids)))]


BUCC2018 = TaskSpec(
    name="bucc2018", kind="retrieval", languages=OFFICIAL_LANGUAGES["bucc2018"], labels=(), metric="f1",
    loader=local_or_hub("bucc2018", _bucc_locate, _bucc_read, _bucc_hub), max_length=128,
    hub=("google/xtreme",), locate=_bucc_locate, splits=SPLITS_WITH_TEST,
    description="BUCC 2018 (Zweigenbaum et al.): mining parallel sentences (source id, English id) from comparable corpora.",
)

_TATOEBA_FIX = "put LASER's data/tatoeba/v1 files (tatoeba.<xxx>-eng.<xxx> and .eng) in tatoeba/"


def _tatoeba_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        raise _no_train("tatoeba", "Tatoeba is a test set")
    if language not in TATOEBA_CODES:
        raise TaskDataError(f"tatoeba: no corpus for {language!r}: English is the target side of every pair; "
                            f"fix: load one of {', '.join(OFFICIAL_LANGUAGES['tatoeba'])}")
    code = TATOEBA_CODES[language]
    try:
        (source,) = resolve_files("tatoeba", split, language, options,
                                  ["tatoeba/tatoeba.{code}-eng.{code}", "tatoeba/v1/tatoeba.{code}-eng.{code}"],
                                  _TATOEBA_FIX, code=code)
    except TaskDataError:
        xtreme = os.path.join(options.data_dir or ".", "tatoeba", f"{language}-en.{language}")
        if os.path.exists(xtreme) and options.file_override("tatoeba", split, language) is None:
            raise data_error(xtreme, None, "XTREME's tatoeba layout sorts the English side, so the gold pairs are "
                             "not in these files", _TATOEBA_FIX) from None
        raise
    return source, source[: -len(code)] + "eng"


def _tatoeba_read(paths, split, language) -> list:
    return [read_tatoeba(*paths)]


def _tatoeba_hub(split: str, language: str) -> list:
    if split == "train" or language not in TATOEBA_CODES:
        _tatoeba_locate(split, language, DataOptions())  # raises the same clear error as the local path
    dataset, _ = hub_splits("tatoeba", "google/xtreme", f"tatoeba.{TATOEBA_CODES[language]}", ("validation",))
    sources, targets = tuple(dataset["source_sentence"]), tuple(dataset["target_sentence"])
    ids = tuple(str(i) for i in range(len(sources)))
    return [RetrievalCorpus(ids, sources, ids, targets, tuple((i, i) for i in ids))]


TATOEBA = TaskSpec(
    name="tatoeba", kind="retrieval", languages=OFFICIAL_LANGUAGES["tatoeba"], labels=(), metric="accuracy",
    loader=local_or_hub("tatoeba", _tatoeba_locate, _tatoeba_read, _tatoeba_hub), max_length=128,
    hub=("google/xtreme",), locate=_tatoeba_locate, splits=SPLITS_WITH_TEST,
    description="Tatoeba (Artetxe & Schwenk 2019): find each sentence's English translation among up to 1000.",
)


# ---------------------------------------------------------------------------------------------
# XTREME-R: XCOPA (multiple choice), LAReQA and Mewsli-X (retrieval)
# ---------------------------------------------------------------------------------------------

_XCOPA_FIX = "run XTREME's download_data.sh (xcopa/) or put cambridgeltl/xcopa's data/<lang>/ files in xcopa/"


def _xcopa_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        candidates = ["xcopa/train-{lang}.jsonl", "xcopa/COPA/train.jsonl"]
    else:
        candidates = ["xcopa/val-{lang}.jsonl", "xcopa/data/{lang}/val.{lang}.jsonl", "xcopa/{lang}/val.{lang}.jsonl"]
        if language == "en":
            candidates.append("xcopa/COPA/val.jsonl")
    return resolve_files("xcopa", split, language, options, candidates, _XCOPA_FIX)


def _xcopa_read(paths, split, language) -> list:
    return [example for path in paths for example in read_copa(path)]


def _xcopa_hub(split: str, language: str) -> list:
    if language == "en":  # the English COPA (XCOPA's source) is a SuperGLUE task
        dataset, _ = hub_splits("xcopa", "aps/super_glue", "copa", hub_split_names(split))
    else:
        dataset, _ = hub_splits("xcopa", "cambridgeltl/xcopa", language, hub_split_names(split))
    return [MultipleChoiceExample(row["premise"], (row["choice1"], row["choice2"]), int(row["label"]), row["question"])
            for row in dataset if int(row["label"]) in (0, 1)]


XCOPA = TaskSpec(
    name="xcopa", kind="multiple_choice", languages=XCOPA_LANGUAGES, labels=("0", "1"), metric="accuracy",
    loader=local_or_hub("xcopa", _xcopa_locate, _xcopa_read, _xcopa_hub), max_length=128,
    hub=("cambridgeltl/xcopa", "aps/super_glue"), locate=_xcopa_locate,
    description="XCOPA (Ponti et al. 2020, XTREME-R): causal commonsense, 2 choices; trained on English COPA.",
)


def _no_hub(task: str, where: str):
    def hub(split: str, language: str) -> list:
        raise TaskDataError(f"{task}: not on the HF hub; fix: download it ({where}) and set DataOptions.data_dir "
                            f"(docs/tasks.md)")
    return hub


def _lareqa_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        raise _no_train("lareqa", "retrieval training is not supported; LAReQA is evaluated only")
    own = resolve_files("lareqa", split, language, options, ["lareqa/xquad-r/{lang}.json"],
                        "run XTREME's download_data.sh (lareqa/, google-research-datasets/lareqa)")
    others = []
    for other in LAREQA_LANGUAGES:  # the candidate pool: every language's answer sentences
        path = os.path.join(os.path.dirname(own[0]), f"{other}.json")
        if other != language and os.path.exists(path):
            others.append(path)
    return own + tuple(others)


def _lareqa_read(paths, split, language) -> list:
    files = {os.path.splitext(os.path.basename(p))[0]: p for p in paths[1:]}
    return [lareqa_corpus({language: paths[0], **files}, language)]


LAREQA = TaskSpec(
    name="lareqa", kind="retrieval", languages=LAREQA_LANGUAGES, labels=(), metric="map_at_20",
    loader=local_or_hub("lareqa", _lareqa_locate, _lareqa_read, _no_hub("lareqa", "google-research-datasets/lareqa")),
    max_length=128, locate=_lareqa_locate,
    description="LAReQA XQuAD-R (Roy et al. 2020, XTREME-R): retrieve answer sentences in any language; mAP@20.",
)

_MEWSLI_FIX = "run XTREME's download_data.sh (mewslix/; google-research dense_representations_for_entity_retrieval)"


def _mewslix_locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
    if split == "train":
        raise _no_train("mewsli_x", "retrieval training is not supported; Mewsli-X is evaluated only")
    mentions = resolve_files("mewsli_x", split, language, options,
                             ["mewslix/wikinews_mentions/dev-{lang}.jsonl", "mewsli_x/wikinews_mentions/dev-{lang}.jsonl"],
                             _MEWSLI_FIX)
    folder = os.path.dirname(os.path.dirname(mentions[0]))
    return mentions + (os.path.join(folder, "candidate_set_entities.jsonl"),)


def _mewslix_read(paths, split, language) -> list:
    *mention_files, entity_file = paths
    entity_ids, descriptions = read_mewsli_entities(entity_file)
    known = set(entity_ids)
    mentions = []
    for path in mention_files:
        for line, example_id, query, entity in read_mewsli_mentions(path, language):
            if entity not in known:
                raise data_error(path, line, f"mention {example_id}: gold entity {entity} is not in {entity_file}",
                                 "use the candidate set released with these mentions")
            mentions.append((example_id, query, entity))
    return [RetrievalCorpus(tuple(m[0] for m in mentions), tuple(m[1] for m in mentions), tuple(entity_ids),
                            tuple(descriptions), tuple((m[0], m[2]) for m in mentions))]


MEWSLI_X = TaskSpec(
    name="mewsli_x", kind="retrieval", languages=MEWSLIX_LANGUAGES, labels=(), metric="map_at_20",
    loader=local_or_hub("mewsli_x", _mewslix_locate, _mewslix_read, _no_hub("mewsli_x", "google-research's Mewsli-X")),
    max_length=128, locate=_mewslix_locate,
    description="Mewsli-X (Botha et al. 2020, XTREME-R): link news mentions to Wikidata entities by retrieval; mAP@20.",
)

TARGET_TASKS: tuple[TaskSpec, ...] = (XNLI, PAWSX, UDPOS, PANX, XQUAD, MLQA, TYDIQA, BUCC2018, TATOEBA,
                                      XCOPA, LAREQA, MEWSLI_X)
