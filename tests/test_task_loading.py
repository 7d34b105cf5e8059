"""Loading every real task: the registry, the shared real samples (../shared/data), the fixtures.

Shared-data tests check counts and one decoded example against the files read independently
here (plain splitting, csv, json), never against text copied into this file. The fixtures
under tests/fixtures/tasks/ are small files written by hand in each official format.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from xstilts.tasks import DataOptions, TaskDataError, UnknownTaskError, get_task
from xstilts.tasks.base import MultipleChoiceExample, PairExample, RetrievalCorpus, SpanQAExample, TaggingExample
from xstilts.tasks.registry import INTERMEDIATE_TASK_NAMES, TARGET_TASK_NAMES, TASKS
from xstilts.tasks.xtreme_eval import OFFICIAL_LANGUAGES
from xstilts.tasks.xtreme_tasks import TATOEBA_CODES, UPOS_LABELS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
DATA = FIXTURES / "data"



def shared_data(test):
    """Reads ../shared/data: marked, and skipped (saying where it looked) when it is absent."""
    skip = pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared real samples are not at {SHARED}")
    return pytest.mark.shared_data(skip(test))


def shared() -> DataOptions:
    return DataOptions(str(SHARED))


def fixtures(**files: str) -> DataOptions:
    return DataOptions(str(DATA), files=files or None)


def tsv_rows(path: Path, header: bool = False) -> list[list[str]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n") if line]
    return rows[1:] if header else rows


def blocks(path: Path) -> list[list[str]]:
    """Blank-line-separated groups of non-blank lines."""
    groups, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            groups.append(current)
            current = []
    return groups + ([current] if current else [])


def squad_questions(path: Path) -> list[tuple[dict, dict]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return [(paragraph, qa) for article in document["data"] for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]]


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

EXPECTED_KINDS = {
    "xnli": "classification", "pawsx": "classification", "udpos": "tagging", "panx": "tagging",
    "xquad": "span_qa", "mlqa": "span_qa", "tydiqa": "span_qa", "bucc2018": "retrieval", "tatoeba": "retrieval",
    "xcopa": "multiple_choice", "lareqa": "retrieval", "mewsli_x": "retrieval",
    "mnli": "classification", "anli_plus": "classification", "qqp": "classification", "squad_v1": "span_qa",
    "squad_v2": "span_qa", "hellaswag": "multiple_choice", "ccg": "tagging", "cosmosqa": "multiple_choice",
    "commonsenseqa": "multiple_choice", "swag": "multiple_choice", "piqa": "multiple_choice",
    "snli": "classification", "anli": "classification", "fever_nli": "classification",
}
EXPECTED_METRICS = {"classification": "accuracy", "multiple_choice": "accuracy", "tagging": "f1", "span_qa": "f1"}


def test_every_task_is_registered_with_its_kind_and_metric():
    for name, kind in EXPECTED_KINDS.items():
        task = get_task(name)
        assert task.name == name and task.kind == kind, name
        if name == "ccg":  # token accuracy, as jiant scores CCG supertagging (tests/test_protocols.py)
            assert task.metric == "accuracy" and task.tag_metric == "accuracy", name
        elif kind in EXPECTED_METRICS:
            assert task.metric == EXPECTED_METRICS[kind], name
    assert get_task("tatoeba").metric == "accuracy" and get_task("bucc2018").metric == "f1"
    # XTREME-R's mAP@20, named without "@" (MLflow metric keys cannot hold it)
    assert get_task("lareqa").metric == get_task("mewsli_x").metric == "map_at_20"
    assert set(TARGET_TASK_NAMES) | set(INTERMEDIATE_TASK_NAMES) == set(EXPECTED_KINDS)
    # the synthetic tasks are still there
    assert {"synthetic_xnli", "synthetic_panx", "synthetic_mnli", "synthetic_qqp"} <= set(TASKS)


def test_target_languages_are_the_official_lists_in_xtreme_order():
    assert get_task("xnli").languages == tuple("ar bg de el en es fr hi ru sw th tr ur vi zh".split())
    assert get_task("pawsx").languages == tuple("de en es fr ja ko zh".split())
    for name in ("panx", "udpos", "tatoeba", "bucc2018", "xquad", "mlqa", "tydiqa", "xnli", "pawsx"):
        assert get_task(name).languages == OFFICIAL_LANGUAGES[name], name
    assert get_task("xcopa").languages == tuple("et ht id it qu sw ta th tr vi zh".split())
    assert get_task("mewsli_x").languages == tuple("ar de en es fa ja pl ro ta tr uk".split())
    assert set(get_task("lareqa").languages) == set("ar de el en es hi ru th tr vi zh".split())
    for name in INTERMEDIATE_TASK_NAMES:
        assert get_task(name).languages == ("en",), name
    assert all(get_task(name).train_language == "en" for name in EXPECTED_KINDS)


def test_labels_of_the_classification_and_tagging_tasks():
    nli = ("entailment", "neutral", "contradiction")
    for name in ("xnli", "mnli", "snli", "anli", "anli_plus", "fever_nli"):
        assert get_task(name).labels == nli
    assert get_task("pawsx").labels == ("0", "1")
    assert get_task("qqp").labels == ("not_duplicate", "duplicate")
    assert set(get_task("panx").labels) == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}
    assert len(get_task("udpos").labels) == 17 and "PROPN" in get_task("udpos").labels
    assert {name: len(get_task(name).labels) for name in ("xcopa", "hellaswag", "swag", "cosmosqa", "commonsenseqa",
                                                         "piqa")} == {"xcopa": 2, "hellaswag": 4, "swag": 4,
                                                                      "cosmosqa": 4, "commonsenseqa": 5, "piqa": 2}


def test_unknown_task_and_unknown_language_give_clear_errors():
    with pytest.raises(UnknownTaskError) as error:
        get_task("xnlii")
    assert "unknown task 'xnlii'" in str(error.value) and "did you mean 'xnli'" in str(error.value)
    with pytest.raises(ValueError, match=r"task pawsx has no language 'sw'; it has de, en, es, fr, ja, ko, zh"):
        get_task("pawsx").load("dev", "sw", fixtures())
    with pytest.raises(ValueError, match=r"task mnli has no language 'de'"):
        get_task("mnli").load("train", "de", fixtures())
    with pytest.raises(ValueError, match=r"unknown split 'test'.*defines no test data"):
        get_task("mnli").load("test", "en", fixtures())


def test_data_options_files_keys_are_checked():
    with pytest.raises(ValueError, match="bad key 'train'"):
        DataOptions(files={"train": "x"})
    with pytest.raises(ValueError, match="bad key 'xnli:validation'"):
        DataOptions(files={"xnli:validation": "x"})
    options = DataOptions(files={"xnli:dev": "a-{lang}.tsv", "xnli:dev:de": "b.tsv"})
    assert options.file_override("xnli", "dev", "fr") == "a-fr.tsv"
    assert options.file_override("xnli", "dev", "de") == "b.tsv"
    assert options.file_override("xnli", "train", "en") is None
    hash(options)  # still hashable
    assert DataOptions("d", 1, 2) == DataOptions(data_dir="d", max_examples=1, seed=2)


# ---------------------------------------------------------------------------------------------
# The shared real samples
# ---------------------------------------------------------------------------------------------

@shared_data
def test_shared_xnli():
    task = get_task("xnli")
    labelled = tsv_rows(SHARED / "xnli" / "test-en.labeled.tsv", header=True)  # genre, label, premise, hypothesis
    train = task.load("train", "en", shared())
    assert len(train) == len(labelled) == 5010
    assert train[7] == PairExample(labelled[7][2], labelled[7][3], labelled[7][1])
    for language in task.languages:
        if language == "de":
            continue
        rows = tsv_rows(SHARED / "xnli" / f"dev-{language}.tsv")
        dev = task.load("dev", language, shared())
        assert len(dev) == len(rows) == 2490, language
        assert dev[-1] == PairExample(*rows[-1]), language
    # German: no dev-de.tsv in the samples; the XGLUE dev subset (250 of XNLI's German dev) is read
    german = tsv_rows(SHARED / "xnli" / "de.dev.tsv")
    assert task.load("dev", "de", shared()) == [PairExample(*row) for row in german] and len(german) == 250


@shared_data
def test_shared_pawsx_trains_on_dev_en_and_evaluates_on_test_files():
    task = get_task("pawsx")
    rows = tsv_rows(SHARED / "pawsx" / "dev-en.tsv")
    train = task.load("train", "en", shared())
    assert len(train) == len(rows) == 2000 and train[0] == PairExample(*rows[0])
    with open(SHARED / "pawsx" / "test-zh.hf-labeled.tsv", encoding="utf-8", newline="") as handle:
        zh_rows = list(csv.reader(handle, delimiter="\t"))[1:]  # pandas export: CSV-quoted fields
    zh = task.load("dev", "zh", shared())
    assert zh == [PairExample(r[1], r[2], r[3]) for r in zh_rows] and len(zh) == 2000
    quoted = next(i for i, r in enumerate(zh_rows) if '"' in r[1] + r[2])
    assert '"' in zh[quoted].text_a + zh[quoted].text_b  # inner quotes kept, outer ones removed
    de_rows = tsv_rows(SHARED / "pawsx" / "de.test.tsv", header=True)  # raw TSV: quotes are text
    de = task.load("dev", "de", shared())
    assert de == [PairExample(r[1], r[2], r[3]) for r in de_rows] and len(de) == 2000
    assert task.locate("dev", "de", shared())[0].endswith("pawsx/de.test.tsv")
    # The other dev files translate dev-en (the training data): they are never evaluated on.
    for language in ("en", "es", "fr", "ja", "ko"):
        assert not task.has_data("dev", language, shared()), language
    with pytest.raises(TaskDataError, match="evaluation reads labelled test files only"):
        task.load("dev", "es", shared())


@shared_data
def test_shared_udpos_reads_conllu_words_with_upos():
    task = get_task("udpos")

    def words(path: Path) -> list[list[tuple[str, str]]]:
        sentences = []
        for block in blocks(path):
            columns = [line.split("\t") for line in block if not line.startswith("#")]
            sentences.append([(c[1], c[3]) for c in columns if c[0].isdigit()])
        return sentences

    train = task.load("train", "en", shared())  # English dev treebank as training data
    expected = words(SHARED / "udpos" / "en_ewt-ud-dev.conllu")
    assert len(train) == len(expected) == 2001
    assert [list(zip(e.tokens, e.tags)) for e in train] == expected
    for language in ("en", "de", "fr", "es", "ru", "zh", "tr", "vi", "fi"):
        (path,) = SHARED.joinpath("udpos").glob(f"{language}_*-ud-test.conllu")
        dev = task.load("dev", language, shared())
        assert [list(zip(e.tokens, e.tags)) for e in dev] == words(path), language
        assert all(tag in UPOS_LABELS for e in dev for tag in e.tags)


@shared_data
def test_shared_panx():
    task = get_task("panx")
    train = task.load("train", "en", shared())
    groups = blocks(SHARED / "panx" / "train-en.tsv")
    assert len(train) == len(groups) == 20000
    assert sum(len(e.tokens) for e in train) == 160394
    first = [line.split("\t") for line in groups[0]]
    assert train[0] == TaggingExample(tuple(c[0] for c in first), tuple(c[1] for c in first))
    for language in ("en", "de", "fr", "es", "ru", "zh", "ar", "tr", "vi", "hi", "sw"):
        dev = task.load("dev", language, shared())
        assert len(dev) == len(blocks(SHARED / "panx" / f"dev-{language}.tsv")), language
        assert len(dev) == (1000 if language in ("hi", "sw") else 10000)
    assert not task.has_data("dev", "ja", shared())


@shared_data
def test_shared_qa_tasks():
    tydiqa = squad_questions(SHARED / "tydiqa" / "tydiqa.goldp.en.train.json")
    for name in ("xquad", "mlqa", "tydiqa"):  # English training data: TyDiQA-GoldP English train
        train = get_task(name).load("train", "en", shared())
        assert len(train) == len(tydiqa) == 3696, name
    paragraph, qa = tydiqa[5]
    # XTREME's file repeats ids: the k-th question under an id is "<id>#<k>" (see the TyDiQA test)
    k = [q["id"] for _, q in tydiqa[:6]].count(qa["id"])
    assert train[5] == SpanQAExample(qa["id"] if k == 1 else f"{qa['id']}#{k}", qa["question"], paragraph["context"],
                                     tuple(a["text"] for a in qa["answers"]),
                                     tuple(a["answer_start"] for a in qa["answers"]))
    for language in OFFICIAL_LANGUAGES["xquad"]:
        questions = squad_questions(SHARED / "xquad" / f"xquad.{language}.json")
        dev = get_task("xquad").load("dev", language, shared())
        assert len(dev) == len(questions) == 1190, language
        assert [e.id for e in dev] == [qa["id"] for _, qa in questions]
        for example in dev[:50]:
            for text, start in zip(example.answers, example.answer_starts):
                assert example.context[start:start + len(text)] == text
    sizes = {"en": 1148, "es": 500, "vi": 511, "zh": 504, "de": 512}
    for language, size in sizes.items():
        name = f"dev-context-{language}-question-{language}.json" if language != "de" else "mlqa.de.de.validation.squad.json"
        dev = get_task("mlqa").load("dev", language, shared())
        assert len(dev) == len(squad_questions(SHARED / "mlqa" / name)) == size, language
    assert not get_task("mlqa").has_data("dev", "ar", shared())
    assert not get_task("tydiqa").has_data("dev", "en", shared())  # no labelled TyDiQA dev in the samples


@shared_data
def test_shared_tydiqa_repeated_ids_are_made_unique_with_one_warning():
    """XTREME's tydiqa.goldp.en.train.json numbers questions per article: 3696 questions under
    89 ids, 67 of them repeated, each repeat a different question. Every question is kept, renamed "<id>#<n>" in file order,
    and the loader says so once; the ids then pass the QA encoder's uniqueness check."""
    from collections import Counter

    from xstilts.tasks.formats import RepeatedIdWarning

    questions = squad_questions(SHARED / "tydiqa" / "tydiqa.goldp.en.train.json")
    ids = [qa["id"] for _, qa in questions]
    assert len(ids) == 3696 and len(set(ids)) == 89 and sum(n > 1 for n in Counter(ids).values()) == 67
    with pytest.warns(RepeatedIdWarning) as caught:
        train = get_task("tydiqa").load("train", "en", shared())
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "tydiqa.goldp.en.train.json" in message and "renamed '<id>#<n>'" in message and "67 ids" in message
    assert len(train) == 3696 and len({e.id for e in train}) == 3696
    counts: Counter = Counter()
    for example, (paragraph, qa) in zip(train, questions):  # same order, content untouched
        counts[qa["id"]] += 1
        n = counts[qa["id"]]
        assert example.id == (qa["id"] if n == 1 else f"{qa['id']}#{n}")
        assert (example.question, example.context) == (qa["question"], paragraph["context"])
    from xstilts.tasks.modeling import encode

    tydiqa = get_task("tydiqa")
    assert encode(tydiqa, train[:300], _tokenizer_or_skip(), max_length=64)  # no "ids must be unique" error


def _tokenizer_or_skip():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    # A word-level tokenizer is enough to run the QA windowing; no download, no model.
    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", pad_token="[PAD]")


@shared_data
def test_every_task_loads_every_split_and_language_the_samples_hold():
    """Every registered real task, split and language for which the shared samples hold a file
    (`has_data`) loads non-empty; and the samples cover what docs/tasks.md says they do."""
    import warnings

    from xstilts.tasks.formats import RepeatedIdWarning

    loaded = set()
    for name in TARGET_TASK_NAMES + INTERMEDIATE_TASK_NAMES:
        task = get_task(name)
        for split in ("train", "dev"):
            for language in dict.fromkeys((task.train_language, *task.languages)):
                if split == "train" and language != task.train_language:
                    continue
                if not task.has_data(split, language, shared()):
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RepeatedIdWarning)  # TyDiQA train: its own test
                    examples = task.load(split, language, shared())
                assert examples, (name, split, language)
                if task.kind == "span_qa":
                    assert len({e.id for e in examples}) == len(examples), (name, split, language)
                loaded.add((name, split) if split == "train" else (name, split, language))
    trains = {key[0] for key in loaded if key[1] == "train"}
    assert trains == {"xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa", "mnli", "snli", "qqp"}
    devs = {key[0] for key in loaded if key[1] == "dev"}
    assert devs == {"xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "bucc2018", "tatoeba", "mnli", "anli",
                    "anli_plus", "cosmosqa", "commonsenseqa", "piqa"}
    assert {key[2] for key in loaded if key[:2] == ("tatoeba", "dev")} == set(get_task("tatoeba").languages)
    assert {key[2] for key in loaded if key[:2] == ("bucc2018", "dev")} == {"zh"}
    assert {key[2] for key in loaded if key[:2] == ("pawsx", "dev")} == {"de", "zh"}


@shared_data
def test_shared_retrieval_tasks():
    (bucc,) = get_task("bucc2018").load("dev", "zh", shared())
    zh = tsv_rows(SHARED / "bucc2018" / "zh-en.dev.zh")
    en = tsv_rows(SHARED / "bucc2018" / "zh-en.dev.en")
    gold = tsv_rows(SHARED / "bucc2018" / "zh-en.dev.gold")
    assert (len(bucc.source_ids), len(bucc.target_ids), len(bucc.gold)) == (len(zh), len(en), len(gold)) == (8624, 13589, 257)
    assert (bucc.source_ids[3], bucc.source_sentences[3]) == tuple(zh[3])
    assert bucc.gold == tuple(tuple(g) for g in gold)
    assert not get_task("bucc2018").has_data("dev", "de", shared())

    task = get_task("tatoeba")
    for language in task.languages:
        code = TATOEBA_CODES[language]
        source = (SHARED / "tatoeba" / f"tatoeba.{code}-eng.{code}").read_text(encoding="utf-8").split("\n")[:-1]
        english = (SHARED / "tatoeba" / f"tatoeba.{code}-eng.eng").read_text(encoding="utf-8").split("\n")[:-1]
        (corpus,) = task.load("dev", language, shared())
        assert isinstance(corpus, RetrievalCorpus)
        assert corpus.source_sentences == tuple(source) and corpus.target_sentences == tuple(english), language
        assert corpus.gold == tuple((str(i), str(i)) for i in range(len(source)))
    assert len(task.load("dev", "de", shared())[0].source_ids) == 1000


@shared_data
def test_shared_english_nli_and_qqp():
    mnli_json = json.loads((SHARED / "mnli" / "mnli_train_sample1000.json").read_text(encoding="utf-8"))
    mnli = get_task("mnli").load("train", "en", shared())
    assert len(mnli) == len(mnli_json) == 1000
    assert mnli[0] == PairExample(mnli_json["0"]["text_a"], mnli_json["0"]["text_b"], mnli_json["0"]["label"])
    kshot = tsv_rows(SHARED / "mnli" / "kshot16-13_dev_matched.tsv", header=True)
    dev = get_task("mnli").load("dev", "en", shared())
    assert len(dev) == len(kshot) == 48 and dev[0] == PairExample(kshot[0][8], kshot[0][9], kshot[0][-1])

    snli = json.loads((SHARED / "snli" / "snli_train_sample1000.json").read_text(encoding="utf-8"))
    assert len(get_task("snli").load("train", "en", shared())) == len(snli) == 1000
    assert not get_task("snli").has_data("dev", "en", shared())

    qqp_json = json.loads((SHARED / "qqp" / "qqp_train_sample1000.json").read_text(encoding="utf-8"))
    qqp = get_task("qqp").load("train", "en", shared())
    assert len(qqp) == 1000
    assert [e.label for e in qqp].count("duplicate") == sum(v["label"] == "1" for v in qqp_json.values()) == 377

    letters = {"e": "entailment", "n": "neutral", "c": "contradiction"}
    expected = []
    for round_ in (1, 2, 3):
        with open(SHARED / "anli" / f"ANLI_analysis_r{round_}_dev.csv", encoding="utf-8", newline="") as handle:
            expected += [PairExample(r["context"], r["statement"], letters[r["gold_label"]]) for r in csv.DictReader(handle)]
    anli = get_task("anli").load("dev", "en", shared())
    assert anli == expected and len(anli) == 1000 + 1000 + 1198
    assert get_task("anli_plus").load("dev", "en", shared()) == anli
    assert not get_task("anli").has_data("train", "en", shared())  # ANLI train is not in the samples


@shared_data
def test_shared_english_multiple_choice():
    with open(SHARED / "cosmosqa" / "valid.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cosmos = get_task("cosmosqa").load("dev", "en", shared())
    assert len(cosmos) == len(rows) == 2985
    row = rows[10]
    assert cosmos[10] == MultipleChoiceExample(row["context"], tuple(row[f"answer{i}"] for i in range(4)),
                                               int(row["label"]), row["question"])

    lines = (SHARED / "commonsenseqa" / "dev_rand_split.jsonl").read_text(encoding="utf-8").splitlines()
    csqa = get_task("commonsenseqa").load("dev", "en", shared())
    assert len(csqa) == len(lines) == 1221
    first = json.loads(lines[0])
    assert csqa[0] == MultipleChoiceExample(first["question"], tuple(first["choices"]["text"]),
                                            first["choices"]["label"].index(first["answerKey"]))

    goals = (SHARED / "piqa" / "valid.jsonl").read_text(encoding="utf-8").splitlines()
    labels = (SHARED / "piqa" / "valid-labels.lst").read_text(encoding="utf-8").split()
    piqa = get_task("piqa").load("dev", "en", shared())
    assert len(piqa) == len(goals) == len(labels) == 1838
    last = json.loads(goals[-1])
    assert piqa[-1] == MultipleChoiceExample(last["goal"], (last["sol1"], last["sol2"]), int(labels[-1]))


@shared_data
def test_shared_max_examples_takes_the_first_in_file_order():
    options = DataOptions(str(SHARED), max_examples=3)
    assert get_task("xnli").load("dev", "fr", options) == get_task("xnli").load("dev", "fr", shared())[:3]


# ---------------------------------------------------------------------------------------------
# The fixtures: every task and format variant without a shared sample
# ---------------------------------------------------------------------------------------------

def test_fixture_xnli_xtreme_original_and_mt_layouts():
    task = get_task("xnli")
    train = task.load("train", "en", fixtures())
    assert [e.label for e in train] == ["entailment", "neutral", "contradiction", "contradiction"]
    assert train[0] == PairExample("The bakery on the corner opens before sunrise.", "The bakery opens early.", "entailment")
    # XNLI-1.0's combined dev file: the rows of the language asked for
    assert task.load("dev", "fr", fixtures()) == [
        PairExample("Le train part à huit heures.", "Le train ne part jamais.", "contradiction"),
        PairExample("Le train part à huit heures.", "Le train part le matin.", "entailment")]
    assert [e.label for e in task.load("dev", "de", fixtures())] == ["entailment"]
    # XNLI-MT's header (premise, hypo, label) and its "contradictory"
    mt = task.load("train", "en", fixtures(**{"xnli:train": "xnli/XNLI-MT-1.0/multinli/multinli.train.{lang}.tsv"}))
    assert [e.label for e in mt] == ["contradiction", "entailment"]


def test_fixture_pawsx_official_layout_and_csv_quoting():
    task = get_task("pawsx")
    train = task.load("train", "en", fixtures())  # x-final/en/train.tsv: official train, so dev = dev files
    assert train == [PairExample("The river flows north into the lake .", "The river flows into the lake to the north .", "1"),
                     PairExample("Anna was born in Oslo and moved to Bergen .", "Anna was born in Bergen and moved to Oslo .", "0")]
    de = task.load("dev", "de", fixtures())
    assert de[0] == PairExample('"Nordlicht" ist ein Lied von 1990.', '"Nordlicht" ist ein Lied aus dem Jahr 1990.', "1")
    assert task.locate("dev", "de", fixtures())[0].endswith("x-final/de/dev_2k.tsv")


def test_fixture_tagging_layouts():
    udpos = get_task("udpos")
    assert udpos.load("train", "en", fixtures()) == [
        TaggingExample(("She", "reads", "books", "."), ("PRON", "VERB", "NOUN", "PUNCT")),
        TaggingExample(("Good", "morning"), ("ADJ", "NOUN"))]
    # CoNLL-U: syntactic words; the "du" range line and the empty node 1.1 are skipped
    assert udpos.load("dev", "fr", fixtures()) == [
        TaggingExample(("Il", "parle", "de", "le", "livre", "."), ("PRON", "VERB", "ADP", "DET", "NOUN", "PUNCT")),
        TaggingExample(("Bonjour", "!"), ("INTJ", "PUNCT"))]
    panx = get_task("panx")
    assert panx.load("train", "en", fixtures())[1] == TaggingExample(("United", "Pixel"), ("B-ORG", "I-ORG"))
    # WikiANN's raw file (panx/de-dev) with its "de:" token prefixes
    assert panx.load("dev", "de", fixtures()) == [
        TaggingExample(("Die", "Universität", "Wien"), ("O", "B-ORG", "I-ORG")), TaggingExample(("Karl",), ("B-PER",))]


def test_fixture_ccg_from_ccgbank_auto_and_jiant_layouts():
    task = get_task("ccg")
    assert task.labels == () and task.label_source is not None
    auto = fixtures()
    train = task.load("train", "en", auto)  # sections 02-21 (02 then 21); section 23 is never read
    assert [e.tokens for e in train] == [("Mary", "sees", "birds", "."), ("John", "runs", "."), ("Old", "ships", "sink", ".")]
    assert train[0].tags == ("NP", r"(S[dcl]\NP)/NP", "N", ".")
    assert task.load("dev", "en", auto) == [
        TaggingExample(("Anna", "reads", "books", "."), ("NP", r"(S[dcl]\NP)/NP", "N", "."))]
    # labels from the data: by frequency over train + dev, ties by name
    assert task.resolved(auto).labels == (".", "N", "NP", r"(S[dcl]\NP)/NP", r"S[dcl]\NP", "N/N")
    # an override pointing at the AUTO folder, without data_dir
    root = str(DATA / "ccg" / "ccgbank_1_1" / "data" / "AUTO")
    override = DataOptions(files={"ccg:train": root, "ccg:dev": root})
    assert task.load("dev", "en", override) == task.load("dev", "en", auto)
    jiant = DataOptions(str(FIXTURES / "ccg_jiant"))
    assert task.load("dev", "en", jiant) == [TaggingExample(("John", "runs", "."), ("NP", r"S[dcl]\NP", "."))]
    assert task.resolved(jiant).labels == ("NP", r"(S[dcl]\NP)/NP", "N", ".", r"S[dcl]\NP", "N/N")  # tags_to_id order
    assert get_task("xnli").resolved(auto) is get_task("xnli")


def test_fixture_squad_v1_and_v2():
    v1 = get_task("squad_v1").load("dev", "en", fixtures())
    assert v1 == [SpanQAExample("sq-dev-1", "Which fruit does the orchard grow first in the list?",
                                "The orchard grows apples, pears and plums.", ("apples", "apples"), (18, 18))]
    assert [e.answers for e in get_task("squad_v1").load("train", "en", fixtures())] == [("1874",), ("40 metres",)]
    v2 = get_task("squad_v2").load("train", "en", fixtures())
    assert [(e.id, e.answers, e.answer_starts) for e in v2] == [("v2-train-1", ("two kilometres",), (26,)),
                                                                ("v2-train-2", (), ())]
    assert get_task("squad_v2").load("dev", "en", fixtures())[1].answers == ()


def test_fixture_target_qa_layouts():
    train = get_task("xquad").load("train", "en", fixtures())  # SQuAD v1.1 train, XTREME's English data
    assert [e.id for e in train] == ["sq-train-1", "sq-train-2"]
    assert get_task("xquad").load("dev", "en", fixtures())[0].answers == ("three",)
    (ar,) = get_task("mlqa").load("dev", "ar", fixtures())  # MLQA_V1/dev
    assert ar.context[ar.answer_starts[0]:].startswith(ar.answers[0]) and ar.id == "mlqa-ar-1"
    # TyDiQA's combined dev file: each language's questions (ids start with its English name)
    assert [e.id for e in get_task("tydiqa").load("dev", "fi", fixtures())] == ["finnish-100-0"]
    assert [e.answers for e in get_task("tydiqa").load("dev", "en", fixtures())] == [("Mount Kenya",)]


def test_fixture_bucc_original_layout_and_tatoeba():
    (corpus,) = get_task("bucc2018").load("dev", "fr", fixtures())  # fr-en/fr-en.sample.* (BUCC's names)
    assert corpus.source_ids == ("fr-000000001", "fr-000000002", "fr-000000003")
    assert corpus.target_sentences[2] == "The cat is sleeping on the sofa."
    assert corpus.gold == (("fr-000000001", "en-000000003"), ("fr-000000003", "en-000000001"))
    (tatoeba,) = get_task("tatoeba").load("dev", "jv", fixtures())
    assert tatoeba.source_sentences == ("Aku mangan sega.", "Udane deres banget.", "Omahku cedhak pasar.")
    assert tatoeba.gold == (("0", "0"), ("1", "1"), ("2", "2")) and tatoeba.target_ids == ("0", "1", "2")


def test_fixture_xcopa():
    task = get_task("xcopa")
    assert task.load("train", "en", fixtures())[1] == MultipleChoiceExample(
        "The road was icy.", ("The sun was shining.", "It had frozen overnight."), 1, "cause")
    assert task.load("dev", "et", fixtures())[0].choices == ("Tuba läks jahedamaks.", "Tuba läks pimedamaks.")
    assert [e.label for e in task.load("dev", "it", fixtures())] == [1, 0]  # cambridgeltl/xcopa's data/it/
    assert len(task.load("dev", "en", fixtures())) == 1


def test_fixture_lareqa_pools_every_language():
    (corpus,) = get_task("lareqa").load("dev", "de", fixtures())
    assert corpus.source_ids == ("lq-1_de", "lq-2_de")
    assert corpus.source_sentences == ("Wann wurde das Museum eröffnet?", "Wie viele Etagen hat das Museum?")
    assert set(corpus.target_ids) == {"de_1_0", "de_1_1", "en_1_0", "en_1_1"}
    assert dict(zip(corpus.target_ids, corpus.target_sentences))["en_1_1"] == "It has three floors."
    assert set(corpus.gold) == {("lq-1_de", "de_1_0"), ("lq-1_de", "en_1_0"), ("lq-2_de", "de_1_1"), ("lq-2_de", "en_1_1")}


def test_fixture_mewsli_x():
    (corpus,) = get_task("mewsli_x").load("dev", "en", fixtures())
    assert corpus.source_ids == ("en-1", "en-2")
    assert corpus.source_sentences[0] == "Graz: Heavy rain hit { Graz } on Monday."
    # XTREME-R's preprocess_mention: the mention's sentence only, markers spaced on both sides
    # (so " , " after it), braces already in the text turned into parentheses
    (german,) = get_task("mewsli_x").load("dev", "de", fixtures())
    assert german.source_sentences == ("Wien: { Wien } plant eine neue Brücke.",
                                       "Graz: Die Mur (ein Fluss) stieg in { Graz } , sagte man.")
    assert german.gold == (("de-1", "Q300"), ("de-2", "Q100"))
    assert corpus.target_ids == ("Q100", "Q200", "Q300")
    assert corpus.target_sentences[0] == "Graz is a city in Austria. It lies on the Mur."
    assert corpus.gold == (("en-1", "Q100"), ("en-2", "Q200"))


def test_fixture_english_nli_and_qqp():
    mnli = get_task("mnli")
    assert mnli.load("train", "en", fixtures()) == [
        PairExample("The shop is open.", "The shop is not closed.", "entailment"),
        PairExample("The hotel has a pool on the roof.", "The hotel has no pool.", "contradiction")]
    # MultiNLI jsonl: the pair without annotator consensus ("-") is left out
    assert [e.label for e in mnli.load("dev", "en", fixtures())] == ["neutral", "entailment"]
    assert [e.label for e in get_task("snli").load("train", "en", fixtures())] == ["entailment", "contradiction"]
    anli = get_task("anli").load("train", "en", fixtures())
    assert len(anli) == 6 and [e.label for e in anli[:2]] == ["entailment", "neutral"]
    assert [e.text_b for e in get_task("anli").load("dev", "en", fixtures())] == ["The islands are not connected."] * 3
    fever = get_task("fever_nli").load("train", "en", fixtures())
    assert fever[0] == PairExample("The Danube is a river that flows through Vienna and Budapest.",
                                   "The Danube flows through Vienna.", "entailment")
    assert [e.label for e in fever] == ["entailment", "contradiction", "neutral"]
    plus = get_task("anli_plus").load("train", "en", fixtures())
    own = get_task("anli_plus").load("train", "en", fixtures(**{"anli_plus:train": "nli_fever/train_fitems.jsonl"}))
    assert own == fever  # an override gives ANLI+ a file of its own
    assert plus == anli + mnli.load("train", "en", fixtures()) + get_task("snli").load("train", "en", fixtures()) + fever
    assert get_task("anli_plus").load("dev", "en", fixtures()) == get_task("anli").load("dev", "en", fixtures())
    assert get_task("qqp").load("dev", "en", fixtures()) == [
        PairExample("How can I improve my handwriting?", "What are tips to write more neatly?", "duplicate")]
    assert [e.label for e in get_task("qqp").load("train", "en", fixtures())] == ["duplicate", "not_duplicate"]


def test_fixture_english_multiple_choice():
    hellaswag = get_task("hellaswag").load("dev", "en", fixtures())
    assert hellaswag[0] == MultipleChoiceExample("A man sprays water over a red car.", (
        "he scrubs the doors with a sponge.", "he eats the sponge.", "he flies over the car.",
        "he reads a newspaper under water."), 0)
    assert get_task("hellaswag").load("train", "en", fixtures())[0].label == 2
    swag = get_task("swag").load("train", "en", fixtures())
    assert swag[1].choices[1] == 'She raises her arms and smiles, "finally".' and swag[1].label == 1
    assert get_task("swag").load("dev", "en", fixtures())[0].context == "A boy kicks a ball."
    cosmos = get_task("cosmosqa").load("dev", "en", fixtures())  # a context spanning two CSV lines
    assert cosmos[0].context.endswith("\nWe ate it after dinner.") and cosmos[0].label == 2
    assert cosmos[0].question == "What will probably happen next ?"
    assert get_task("cosmosqa").load("train", "en", fixtures())[0].label == 0
    csqa = get_task("commonsenseqa").load("train", "en", fixtures())  # official layout
    assert csqa == [MultipleChoiceExample("When do people usually open an umbrella?",
                                          ("oven", "rain", "desert", "library", "pocket"), 1)]
    piqa = get_task("piqa").load("train", "en", fixtures())
    assert [e.label for e in piqa] == [0, 1] and piqa[1].context == "Open a stuck jar lid."


def test_every_registered_task_loads_from_the_fixtures_or_says_why_not():
    """Each real task's dev split of one language loads from the fixtures (CCG and all)."""
    fixture_language = {"mlqa": "ar", "bucc2018": "fr", "tatoeba": "jv", "xcopa": "et"}
    for name in TARGET_TASK_NAMES + INTERMEDIATE_TASK_NAMES:
        task = get_task(name)
        language = fixture_language.get(name, "en")
        examples = task.load("dev", language, fixtures())
        assert examples, name
        assert task.has_data("dev", language, fixtures()), name


def test_has_data_and_locate():
    task = get_task("xnli")
    assert task.has_data("dev", "fr", fixtures()) and not get_task("panx").has_data("dev", "sw", fixtures())
    # has_data looks at files: XNLI-1.0's combined dev file exists, but holds no Swahili rows
    assert task.has_data("dev", "sw", fixtures())
    with pytest.raises(TaskDataError, match=r"xnli\.dev\.tsv: no xnli examples for language 'sw'"):
        task.load("dev", "sw", fixtures())
    assert task.has_data("dev", "sw", DataOptions())  # no data_dir: the hub decides
    assert not get_task("ccg").has_data("dev", "en", DataOptions())  # not on the hub
    assert not get_task("xnli").has_data("train", "en", DataOptions(files={"xnli:train": str(DATA / "none.tsv")}))
    assert task.locate("dev", "fr", fixtures()) == (str(DATA / "xnli" / "XNLI-1.0" / "xnli.dev.tsv"),)
    assert get_task("synthetic_xnli").has_data("dev", "far", fixtures())
    assert get_task("piqa").locate("train", "en", fixtures())[1].endswith("piqa/train-labels.lst")
