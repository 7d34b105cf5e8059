"""`xstilts evaluate`'s scorer (xstilts.tasks.xtreme_eval.score_folders): layout, formats, errors, aggregation.

Expected numbers are worked out by hand in the comments; none is copied from the scorer's output.
"""
from __future__ import annotations

import importlib
import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from xstilts.tasks.xtreme_eval import OFFICIAL_LANGUAGES, TASK_GROUPS, EvaluationInputError, score_folders

approx = pytest.approx


def write(root: Path, relative: str, content: str | bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def squad(*questions: tuple[str, list[str]], bare: bool = False) -> str:
    """A SQuAD v1.1 label file with one paragraph per question."""
    articles = [{
        "title": "t",
        "paragraphs": [
            {"context": "c", "qas": [{"id": qid, "question": "q", "answers": [{"text": a, "answer_start": 0} for a in answers]}]}
            for qid, answers in questions
        ],
    }]
    return json.dumps(articles if bare else {"version": "1.1", "data": articles}, ensure_ascii=False)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    p, l = tmp_path / "predictions", tmp_path / "labels"
    p.mkdir()
    l.mkdir()
    return p, l


def score(p: Path, l: Path, tasks=None) -> dict:
    return score_folders(str(p), str(l), tasks)


def error_message(p: Path, l: Path, tasks=None) -> str:
    with pytest.raises(EvaluationInputError) as info:
        score(p, l, tasks)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message and message
    assert isinstance(info.value, ValueError)
    return message


# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------

def test_official_language_table_and_groups():
    assert list(OFFICIAL_LANGUAGES) == ["pawsx", "xnli", "panx", "udpos", "bucc2018", "tatoeba", "xquad", "mlqa", "tydiqa"]
    assert OFFICIAL_LANGUAGES["pawsx"] == ("de", "en", "es", "fr", "ja", "ko", "zh")
    assert OFFICIAL_LANGUAGES["mlqa"] == ("en", "es", "de", "ar", "hi", "vi", "zh")
    assert OFFICIAL_LANGUAGES["tydiqa"] == ("en", "ar", "bn", "fi", "id", "ko", "ru", "sw", "te")
    assert OFFICIAL_LANGUAGES["bucc2018"] == ("de", "fr", "ru", "zh")
    expected_sizes = {"pawsx": 7, "xnli": 15, "panx": 40, "udpos": 33, "bucc2018": 4, "tatoeba": 36,
                      "xquad": 11, "mlqa": 7, "tydiqa": 9}
    assert {task: len(langs) for task, langs in OFFICIAL_LANGUAGES.items()} == expected_sizes
    assert OFFICIAL_LANGUAGES["panx"][:3] == ("ar", "he", "vi") and OFFICIAL_LANGUAGES["panx"][-1] == "hu"
    assert OFFICIAL_LANGUAGES["udpos"][0] == "af" and OFFICIAL_LANGUAGES["udpos"][-1] == "zh"
    assert "en" not in OFFICIAL_LANGUAGES["tatoeba"]
    assert dict(TASK_GROUPS) == {
        "classification": ("pawsx", "xnli"), "tagging": ("udpos", "panx"),
        "qa": ("xquad", "mlqa", "tydiqa"), "retrieval": ("bucc2018", "tatoeba"),
    }


# ---------------------------------------------------------------------------------------------
# Per-task formats
# ---------------------------------------------------------------------------------------------

def test_classification_lines_crlf_and_trailing_blanks(folders):
    p, l = folders
    write(l, "xnli/test-de.tsv", "entailment\nneutral\ncontradiction\nneutral\n")
    # CRLF, trailing space / tab, no final newline; line 3 "Contradiction" differs by case
    write(p, "xnli/test-de.tsv", b"entailment \r\n\tneutral\t\r\nContradiction\r\nneutral")
    result = score(p, l)
    assert result == {"xnli": {"accuracy": {"de": approx(75.0)}, "avg_accuracy": approx(75.0), "avg_metric": approx(75.0)}}


def test_classification_blank_lines_are_lines(folders):
    p, l = folders
    # 3 lines each; the blank third lines are equal strings ("" == "")
    write(l, "pawsx/test-en.tsv", "1\n0\n\n")
    write(p, "pawsx/test-en.tsv", "1\n1\n   \n")
    assert score(p, l)["pawsx"]["accuracy"] == {"en": approx(200 / 3)}


def test_average_is_over_scored_languages_in_official_order(folders):
    p, l = folders
    write(l, "pawsx/test-zh.tsv", "1\n0\n")
    write(p, "pawsx/test-zh.tsv", "1\n1\n")   # 50
    write(l, "pawsx/test-de.tsv", "1\n")
    write(p, "pawsx/test-de.tsv", "1\n")      # 100
    result = score(p, l)["pawsx"]
    assert list(result) == ["accuracy", "avg_accuracy", "avg_metric"]
    assert list(result["accuracy"]) == ["de", "zh"]
    assert result["avg_accuracy"] == approx(75.0)    # (100 + 50) / 2, not weighted by size
    assert result["avg_metric"] == approx(75.0)


def test_tatoeba_accuracy(folders):
    p, l = folders
    write(l, "tatoeba/test-ar.tsv", "0\n1\n2\n3\n")
    write(p, "tatoeba/test-ar.tsv", "0\n2\n2\n0\n")   # lines 1 and 3 right: 50
    assert score(p, l)["tatoeba"] == {"accuracy": {"ar": approx(50.0)}, "avg_accuracy": approx(50.0), "avg_metric": approx(50.0)}


def test_udpos_chunks_blank_lines_and_optional_final_blank(folders):
    p, l = folders
    # 2 sentences. Gold: [NOUN NOUN][VERB] + [SCONJ][SCONJ] = 4 chunks.
    # Pred: [NOUN][ADJ][VERB] + [SCONJ][SCONJ] = 5 chunks. Correct: VERB, SCONJ, SCONJ = 3.
    write(l, "udpos/test-en.tsv", "NOUN\nNOUN\nVERB\n\nSCONJ\nSCONJ\n\n")
    write(p, "udpos/test-en.tsv", b"NOUN\r\nADJ \r\nVERB\r\n  \r\nSCONJ\r\nSCONJ")
    result = score(p, l)["udpos"]
    assert list(result) == ["f1", "precision", "recall", "avg_f1", "avg_precision", "avg_recall", "avg_metric"]
    assert result["precision"]["en"] == approx(100 * 3 / 5)
    assert result["recall"]["en"] == approx(100 * 3 / 4)
    assert result["f1"]["en"] == approx(100 * 2 * 0.6 * 0.75 / 1.35)
    assert result["avg_metric"] == result["avg_f1"] == approx(100 * 2 * 0.6 * 0.75 / 1.35)


def test_panx_empty_sentences_from_double_blank_lines(folders):
    p, l = folders
    # "B-PER / blank / blank / O": sentences [B-PER], [], [O] in both files
    write(l, "panx/test-en.tsv", "B-PER\nI-PER\n\n\nO\nB-LOC\n")
    # pred: [PER 0-1] via I-PER after O? no: B-PER I-PER -> same chunk; sentence 3: O then I-LOC
    # starts a LOC chunk (I after O) -> identical chunks: 100
    write(p, "panx/test-en.tsv", "B-PER\nI-PER\n\n\nO\nI-LOC\n\n")
    assert score(p, l)["panx"]["f1"] == {"en": approx(100.0)}


def test_panx_boundary_errors(folders):
    p, l = folders
    # gold: [PER 0-1] [LOC 3]; pred [PER 0] [PER 1] [LOC 3]: C = 1 (LOC), P = 1/3, R = 1/2
    write(l, "panx/test-de.tsv", "B-PER\nI-PER\nO\nB-LOC\n")
    write(p, "panx/test-de.tsv", "B-PER\nB-PER\nO\nB-LOC\n")
    result = score(p, l)["panx"]
    assert result["precision"] == {"de": approx(100 / 3)}
    assert result["recall"] == {"de": approx(50.0)}
    assert result["f1"] == {"de": approx(40.0)}


def test_tagging_all_empty_sentences_score_zero(folders):
    p, l = folders
    write(l, "panx/test-en.tsv", "\n\n")  # two empty sentences, no chunk anywhere
    write(p, "panx/test-en.tsv", "\n\n")
    assert score(p, l)["panx"]["f1"] == {"en": 0.0}


def test_empty_files_score_zero(folders):
    p, l = folders
    write(l, "xnli/test-en.tsv", "")
    write(p, "xnli/test-en.tsv", "")
    write(l, "udpos/test-en.tsv", "")
    write(p, "udpos/test-en.tsv", "")
    result = score(p, l)
    assert result["xnli"]["accuracy"] == {"en": 0.0}
    assert result["udpos"]["f1"] == {"en": 0.0}


def test_bucc_sets_duplicates_order_crlf(folders):
    p, l = folders
    write(l, "bucc2018/test-zh.tsv", "zh-1\ten-1\nzh-2\ten-2\nzh-3\ten-3\nzh-4\ten-4\n")
    # set {(1,1), (3,9), (4,4)} after removing the duplicate and the padding: C = 2
    write(p, "bucc2018/test-zh.tsv", b"zh-4\ten-4 \r\nzh-1\ten-1\r\n  zh-1\ten-1\r\nzh-3\ten-9\r\n")
    result = score(p, l)["bucc2018"]
    assert result["precision"] == {"zh": approx(100 * 2 / 3)}
    assert result["recall"] == {"zh": approx(100 * 2 / 4)}
    assert result["f1"] == {"zh": approx(100 * 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))}
    assert result["avg_metric"] == approx(100 * 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_bucc_swapped_columns_and_empty_prediction(folders):
    p, l = folders
    write(l, "bucc2018/test-de.tsv", "de-1\ten-1\n")
    write(p, "bucc2018/test-de.tsv", "en-1\tde-1\n")   # wrong order: no match
    write(l, "bucc2018/test-fr.tsv", "fr-1\ten-1\n")
    write(p, "bucc2018/test-fr.tsv", "")               # valid, scores 0
    result = score(p, l)["bucc2018"]
    assert result["f1"] == {"de": 0.0, "fr": 0.0}
    assert result["precision"] == {"de": 0.0, "fr": 0.0}


def test_xquad_squad_rules_missing_and_extra_ids(folders):
    p, l = folders
    write(l, "xquad/test-en.json", squad(("q1", ["the city of Paris", "Paris"]), ("q2", ["1990"]),
                                         ("q3", ["red barn door"]), ("q4", ["e-mail"])))
    # q1 EM 1 F1 1; q2 missing 0/0; q3 [big red barn] vs [red barn door] EM 0 F1 2/3; q4 EM 1 F1 1
    write(p, "xquad/test-en.json", json.dumps({"q1": "paris", "q3": "the big red barn", "q4": "Email", "zz": "extra"}))
    # xquad uses English rules even for Arabic: ال is NOT removed -> EM 0, F1 0
    write(l, "xquad/test-ar.json", squad(("a1", ["الكتاب"])))
    write(p, "xquad/test-ar.json", json.dumps({"a1": "كتاب"}))
    result = score(p, l)["xquad"]
    assert list(result) == ["exact_match", "f1", "avg_exact_match", "avg_f1", "avg_metric"]
    assert result["exact_match"] == {"en": approx(50.0), "ar": 0.0}
    assert result["f1"] == {"en": approx(100 * (1 + 2 / 3 + 1) / 4), "ar": 0.0}
    assert list(result["f1"]) == ["en", "ar"]
    assert result["avg_exact_match"] == approx(25.0)
    assert result["avg_f1"] == approx(100 * (1 + 2 / 3 + 1) / 4 / 2)
    assert result["avg_metric"] == approx((25.0 + 100 * (1 + 2 / 3 + 1) / 8) / 2)


def test_tydiqa_accepts_a_bare_list_of_articles(folders):
    p, l = folders
    write(l, "tydiqa/test-fi.json", squad(("f1", ["Helsinki"]), ("f2", ["Turku"]), bare=True))
    write(p, "tydiqa/test-fi.json", json.dumps({"f1": "Helsinki.", "f2": ""}))  # EM 1 F1 1; EM 0 F1 0
    result = score(p, l)["tydiqa"]
    assert result["exact_match"] == {"fi": approx(50.0)}
    assert result["f1"] == {"fi": approx(50.0)}
    assert result["avg_metric"] == approx(50.0)


def test_mlqa_language_dependent_normalisation(folders):
    p, l = folders
    # zh: [北 京 大 学] vs [北 京] -> EM 0, F1 2/3
    write(l, "mlqa/test-zh.json", squad(("z", ["北京"])))
    write(p, "mlqa/test-zh.json", json.dumps({"z": "北京大学"}, ensure_ascii=False))
    # ar: ال removed -> EM 1, F1 1
    write(l, "mlqa/test-ar.json", squad(("a", ["الكتاب"])))
    write(p, "mlqa/test-ar.json", json.dumps({"a": "كتاب"}, ensure_ascii=False))
    # es: "el" is an article, "¿" punctuation -> EM 1
    write(l, "mlqa/test-es.json", squad(("e", ["el río"])))
    write(p, "mlqa/test-es.json", json.dumps({"e": "¿Río?"}, ensure_ascii=False))
    result = score(p, l)["mlqa"]
    assert list(result["exact_match"]) == ["es", "ar", "zh"]
    assert result["exact_match"] == {"es": approx(100.0), "ar": approx(100.0), "zh": 0.0}
    assert result["f1"] == {"es": approx(100.0), "ar": approx(100.0), "zh": approx(200 / 3)}
    assert result["avg_metric"] == approx(((200 / 3) + (100 + 100 + 200 / 3) / 3) / 2)


# ---------------------------------------------------------------------------------------------
# Layout rules
# ---------------------------------------------------------------------------------------------

def test_only_tasks_in_both_folders_are_scored_others_ignored(folders):
    p, l = folders
    write(l, "xnli/test-en.tsv", "a\n")
    write(p, "xnli/test-en.tsv", "a\n")
    write(l, "pawsx/test-en.tsv", "1\n")          # no pawsx folder in P: not scored
    write(p, "tatoeba/test-ar.tsv", "1\n")        # no tatoeba folder in L: not scored
    write(p, "XNLI/test-en.tsv", "b\n")           # not an XTREME task name (case matters)
    write(l, "XNLI/test-en.tsv", "a\n")
    write(p, "notes/test-en.tsv", "x\n")
    write(l, "notes/test-en.tsv", "y\n")
    write(l, "mewslix/test-en.json", "not json")  # an XTREME-R task: not scored, never read
    write(p, "mewslix/test-en.json", "not json")
    write(l, "README.txt", "a file, not a folder")
    assert list(score(p, l)) == ["xnli"]


def test_languages_off_the_list_and_prediction_only_files_are_ignored(folders):
    p, l = folders
    write(l, "xquad/test-en.json", squad(("q", ["x"])))
    write(p, "xquad/test-en.json", json.dumps({"q": "x"}))
    write(l, "xquad/test-ro.json", "broken")      # ro is XTREME-R only: ignored, no prediction needed
    write(l, "xquad/test-xx.json", "broken")
    write(l, "xquad/dev-en.json", "broken")
    write(l, "xquad/test-de.tsv", "wrong extension")
    write(p, "xquad/test-es.json", "{}")          # no label file: not scored
    result = score(p, l)["xquad"]
    assert result["exact_match"] == {"en": approx(100.0)}
    assert result["f1"] == {"en": approx(100.0)}


def test_tasks_argument_limits_scoring(folders):
    p, l = folders
    write(l, "xnli/test-en.tsv", "a\n")
    write(p, "xnli/test-en.tsv", "a\n")
    write(l, "pawsx/test-en.tsv", "1\n2\n")
    write(p, "pawsx/test-en.tsv", "1\n")          # broken, but not selected: never read
    assert list(score(p, l, ["xnli"])) == ["xnli"]
    assert list(score(p, l, ["xnli", "tydiqa"])) == ["xnli"]  # tydiqa selected but absent
    assert score(p, l, []) == {}


def test_unknown_task_name_is_an_error_naming_the_known_tasks(folders):
    p, l = folders
    message = error_message(p, l, ["xnli", "ner"])
    assert "'ner'" in message
    for task in OFFICIAL_LANGUAGES:
        assert task in message


def test_result_is_json_serialisable(folders):
    p, l = folders
    write(l, "bucc2018/test-ru.tsv", "ru-1\ten-1\n")
    write(p, "bucc2018/test-ru.tsv", "ru-1\ten-1\n")
    result = score(p, l)
    assert json.loads(json.dumps(result)) == result
    assert all(type(v) is float for v in result["bucc2018"]["f1"].values())


# ---------------------------------------------------------------------------------------------
# Errors: one line, naming file (and line)
# ---------------------------------------------------------------------------------------------

def test_missing_prediction_file(folders):
    p, l = folders
    write(l, "xnli/test-en.tsv", "a\n")
    write(l, "xnli/test-fr.tsv", "a\n")
    write(p, "xnli/test-en.tsv", "a\n")
    message = error_message(p, l)
    assert str(p / "xnli" / "test-fr.tsv") in message and "missing" in message


def test_line_count_differs(folders):
    p, l = folders
    write(l, "pawsx/test-ko.tsv", "1\n0\n1\n")
    write(p, "pawsx/test-ko.tsv", "1\n0\n")
    message = error_message(p, l)
    assert str(p / "pawsx" / "test-ko.tsv") in message and str(l / "pawsx" / "test-ko.tsv") in message
    assert "2 lines" in message and "3 lines" in message and "line 3" in message


def test_trailing_blank_line_changes_line_count(folders):
    p, l = folders
    write(l, "tatoeba/test-ar.tsv", "1\n2\n")
    write(p, "tatoeba/test-ar.tsv", "1\n2\n\n")   # a third (blank) line
    assert "3 lines" in error_message(p, l)


def test_sentence_count_differs(folders):
    p, l = folders
    write(l, "panx/test-en.tsv", "O\n\n\nO\n")       # 3 sentences (middle one empty)
    write(p, "panx/test-en.tsv", "O\n\nO\n")         # 2 sentences
    message = error_message(p, l)
    assert str(p / "panx" / "test-en.tsv") in message
    assert "2 sentences" in message and "3 sentences" in message


def test_tag_count_differs_names_sentence_and_lines(folders):
    p, l = folders
    write(l, "udpos/test-de.tsv", "NOUN\nVERB\n\nDET\nNOUN\nPUNCT\n")
    write(p, "udpos/test-de.tsv", "NOUN\nVERB\n\nDET\nNOUN\n")
    message = error_message(p, l)
    assert str(p / "udpos" / "test-de.tsv") in message
    assert "sentence 2" in message and "line 4" in message
    assert "2 tags" in message and "has 3" in message


def test_bucc_line_without_two_columns(folders):
    p, l = folders
    write(l, "bucc2018/test-fr.tsv", "fr-1\ten-1\n")
    write(p, "bucc2018/test-fr.tsv", "fr-1\ten-1\nfr-2 en-2\n")
    message = error_message(p, l)
    assert str(p / "bucc2018" / "test-fr.tsv") in message and "line 2" in message

    write(p, "bucc2018/test-fr.tsv", "fr-1\ten-1\tx\n")
    assert "line 1" in error_message(p, l)
    write(p, "bucc2018/test-fr.tsv", "fr-1\ten-1\n\n")   # a blank line is not a pair
    assert "line 2" in error_message(p, l)
    write(p, "bucc2018/test-fr.tsv", "fr-1\ten-1\n")
    write(l, "bucc2018/test-fr.tsv", "fr-1\n")           # label files are checked too
    message = error_message(p, l)
    assert str(l / "bucc2018" / "test-fr.tsv") in message and "line 1" in message


def test_bad_utf8_names_file_and_line(folders):
    p, l = folders
    write(l, "xnli/test-en.tsv", "a\nb\nc\n")
    write(p, "xnli/test-en.tsv", b"a\r\nb\r\n\xff\r\n")
    message = error_message(p, l)
    assert str(p / "xnli" / "test-en.tsv") in message and "line 3" in message and "UTF-8" in message


def test_bad_json_prediction_and_label(folders):
    p, l = folders
    write(l, "mlqa/test-en.json", squad(("q", ["x"])))
    write(p, "mlqa/test-en.json", '{"q": "x",\n "r": }')
    message = error_message(p, l)
    assert str(p / "mlqa" / "test-en.json") in message and "line 2" in message and "JSON" in message

    write(p, "mlqa/test-en.json", '{"q": "x"}')
    write(l, "mlqa/test-en.json", "{")
    assert str(l / "mlqa" / "test-en.json") in error_message(p, l)


@pytest.mark.parametrize("prediction", ['["x"]', '{"q": ["x", "y"]}', '{"q": null}', '"x"'])
def test_qa_prediction_must_map_ids_to_strings(folders, prediction):
    p, l = folders
    write(l, "xquad/test-en.json", squad(("q", ["x"])))
    write(p, "xquad/test-en.json", prediction)
    assert str(p / "xquad" / "test-en.json") in error_message(p, l)


@pytest.mark.parametrize("label", [
    '{"version": "1.1"}',                                           # no data
    '{"data": [{"title": "t"}]}',                                   # no paragraphs
    '{"data": [{"paragraphs": [{"qas": [{"id": "q"}]}]}]}',          # no answers
    '{"data": [{"paragraphs": [{"qas": [{"id": "q", "answers": []}]}]}]}',
    '{"data": [{"paragraphs": [{"qas": [{"id": 7, "answers": [{"text": "x"}]}]}]}]}',
    '{"data": [{"paragraphs": [{"qas": [{"id": "q", "answers": [{"answer_start": 0}]}]}]}]}',
    "42",
])
def test_malformed_squad_labels(folders, label):
    p, l = folders
    write(l, "tydiqa/test-en.json", label)
    write(p, "tydiqa/test-en.json", '{"q": "x"}')
    assert str(l / "tydiqa" / "test-en.json") in error_message(p, l)


def test_missing_folders_and_task_without_label_files(folders, tmp_path):
    p, l = folders
    assert "prediction folder" in error_message(tmp_path / "nope", l)
    assert "label folder" in error_message(p, tmp_path / "nope")
    (p / "xnli").mkdir()
    (l / "xnli").mkdir()
    write(l, "xnli/test-xx.tsv", "a\n")      # only an unlisted language
    message = error_message(p, l)
    assert str(l / "xnli") in message and "test-<lang>.tsv" in message


def test_message_stays_one_line_with_newline_in_a_path(tmp_path):
    p, l = tmp_path / "pred\nictions", tmp_path / "labels"
    write(l, "xnli/test-en.tsv", "a\n")
    (p / "xnli").mkdir(parents=True)
    error_message(p, l)  # asserts one line


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------

def _write_all_nine(p: Path, l: Path) -> dict[str, float]:
    """One language per task with hand-computed scores; returns task -> expected avg_metric."""
    write(l, "pawsx/test-de.tsv", "0\n1\n1\n0\n")
    write(p, "pawsx/test-de.tsv", "0\n1\n0\n0\n")                     # 3/4 -> 75
    write(l, "xnli/test-en.tsv", "entailment\nneutral\n")
    write(p, "xnli/test-en.tsv", "entailment\ncontradiction\n")        # 1/2 -> 50
    write(l, "udpos/test-en.tsv", "NOUN\nNOUN\nVERB\n")
    write(p, "udpos/test-en.tsv", "NOUN\nADJ\nVERB\n")                 # P 1/3 R 1/2 -> F1 40
    write(l, "panx/test-en.tsv", "B-PER\nI-PER\nO\n")
    write(p, "panx/test-en.tsv", "B-PER\nI-PER\nO\n")                  # 100
    write(l, "bucc2018/test-zh.tsv", "zh-1\ten-1\nzh-2\ten-2\nzh-3\ten-3\nzh-4\ten-4\n")
    write(p, "bucc2018/test-zh.tsv", "zh-1\ten-1\nzh-2\ten-9\n")       # P 1/2 R 1/4 -> F1 100/3
    write(l, "tatoeba/test-fr.tsv", "0\n1\n2\n3\n")
    write(p, "tatoeba/test-fr.tsv", "0\n0\n0\n0\n")                    # 1/4 -> 25
    write(l, "xquad/test-en.json", squad(("a", ["Paris"]), ("b", ["red barn door"])))
    write(p, "xquad/test-en.json", json.dumps({"a": "Paris", "b": "big red barn"}))  # EM 50, F1 (1 + 2/3)/2
    write(l, "mlqa/test-zh.json", squad(("z", ["北京"])))
    write(p, "mlqa/test-zh.json", json.dumps({"z": "北京大学"}))       # EM 0, F1 2/3
    write(l, "tydiqa/test-en.json", squad(("t", ["x"])))
    write(p, "tydiqa/test-en.json", "{}")                              # unanswered: 0, 0
    return {
        "pawsx": 75.0, "xnli": 50.0, "udpos": 40.0, "panx": 100.0, "bucc2018": 100 / 3, "tatoeba": 25.0,
        "xquad": (50.0 + 100 * (1 + 2 / 3) / 2) / 2, "mlqa": (0.0 + 200 / 3) / 2, "tydiqa": 0.0,
    }


def test_all_nine_tasks_give_groups_and_all_task(folders):
    p, l = folders
    expected = _write_all_nine(p, l)
    result = score(p, l)
    for task, value in expected.items():
        assert result[task]["avg_metric"] == approx(value), task
    assert result["classification"] == approx((75 + 50) / 2)
    assert result["tagging"] == approx((40 + 100) / 2)
    assert result["qa"] == approx((expected["xquad"] + expected["mlqa"] + 0.0) / 3)
    assert result["retrieval"] == approx((100 / 3 + 25) / 2)
    assert result["all_task"] == approx(sum(expected.values()) / 9)
    assert result["all_task"] == approx((75 + 50 + 40 + 100 + 100 / 3 + 25 + (50 + 250 / 3) / 2 + 100 / 3 + 0) / 9)
    assert set(result) == set(OFFICIAL_LANGUAGES) | set(TASK_GROUPS) | {"all_task"}


def test_groups_only_when_all_their_tasks_are_scored(folders):
    p, l = folders
    _write_all_nine(p, l)
    for path in (p / "tydiqa").iterdir():
        path.unlink()
    (p / "tydiqa").rmdir()
    result = score(p, l)
    assert "tydiqa" not in result and "qa" not in result and "all_task" not in result
    assert result["classification"] == approx(62.5)
    assert result["tagging"] == approx(70.0)
    assert result["retrieval"] == approx((100 / 3 + 25) / 2)

    result = score(p, l, ["pawsx", "xnli", "panx"])
    assert set(result) == {"pawsx", "xnli", "panx", "classification"}
    assert result["classification"] == approx(62.5)

    result = score(p, l, ["udpos"])
    assert set(result) == {"udpos"}


# ---------------------------------------------------------------------------------------------
# The CLI wiring (optional: only once study/cli.py offers `evaluate`)
# ---------------------------------------------------------------------------------------------

def _cli_main():
    if not (Path(__file__).resolve().parents[1] / "study" / "cli.py").exists():
        pytest.skip("study/cli.py does not exist yet")
    cli = importlib.import_module("xstilts.study.cli")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as info:
        cli.main(["evaluate", "--help"])
    if info.value.code != 0 or "--prediction-folder" not in out.getvalue():
        pytest.skip("xstilts.study.cli has no `evaluate` subcommand yet")
    return cli.main


def _run_cli(main, argv):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            returned = main(argv)
            code = returned or 0
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def test_cli_evaluate_prints_the_result_and_exits_2_on_bad_input(folders):
    main = _cli_main()
    p, l = folders
    write(l, "xnli/test-en.tsv", "a\nb\n")
    write(p, "xnli/test-en.tsv", "a\na\n")
    code, out, _ = _run_cli(main, ["evaluate", "--prediction-folder", str(p), "--label-folder", str(l), "--tasks", "xnli"])
    assert code == 0
    assert json.loads(out) == {"xnli": {"accuracy": {"en": 50.0}, "avg_accuracy": 50.0, "avg_metric": 50.0}}

    write(p, "xnli/test-en.tsv", "a\n")
    code, out, err = _run_cli(main, ["evaluate", "--prediction-folder", str(p), "--label-folder", str(l)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xstilts evaluate: error: ")
    assert str(p / "xnli" / "test-en.tsv") in lines[0]


# ---------------------------------------------------------------------------------------------
# The real samples (../shared/data), through the comparison script's folder builder
# ---------------------------------------------------------------------------------------------

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED_DATA / "README.md").exists(), reason="../shared/data not available")
def test_real_samples_all_nine_tasks(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        compare = importlib.import_module("compare_official_xtreme_eval")
    finally:
        sys.path.pop(0)
    p, l = tmp_path / "p", tmp_path / "l"
    compare.build_folders(SHARED_DATA, p, l, seed=3, limit=40)
    result = score_folders(str(p), str(l))
    assert set(result) == set(OFFICIAL_LANGUAGES) | set(TASK_GROUPS) | {"all_task"}
    for task, langs in OFFICIAL_LANGUAGES.items():
        first_metric = next(iter(result[task]))  # accuracy / f1 / exact_match: {lang: score}
        assert list(result[task][first_metric]) == list(langs)
        assert 0.0 < result[task]["avg_metric"] < 100.0, task
    # The labels as predictions score 100.
    perfect_tasks = ["xnli", "bucc2018", "udpos", "panx", "tatoeba"]
    perfect = score_folders(str(l), str(l), perfect_tasks)
    assert set(perfect) == set(perfect_tasks) | {"tagging", "retrieval"}
    for task in perfect_tasks:
        assert perfect[task]["avg_metric"] == approx(100.0), task
    # A SQuAD label file is no prediction file (id -> answer string): one-line error naming it.
    with pytest.raises(EvaluationInputError, match="test-en.json"):
        score_folders(str(l), str(l), ["mlqa"])
