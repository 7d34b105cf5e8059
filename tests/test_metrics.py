"""The metric functions in xstilts.tasks.metrics, on hand-computed examples.

Every expected value is worked out in the comment next to it (chunks, shared tokens, set sizes).
"""
from __future__ import annotations

import pytest

from xstilts.tasks.metrics import (
    MLQA_LANGUAGES,
    accuracy,
    bucc_prf,
    mlqa_em_f1,
    mlqa_exact_match,
    mlqa_f1,
    normalize_mlqa_answer,
    normalize_squad_answer,
    squad_em_f1,
    squad_exact_match,
    squad_f1,
    tagging_prf,
)

approx = pytest.approx


# ---------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------

def test_accuracy_counts_exact_string_matches():
    # 2 of 3 equal; "Entailment" differs from "entailment" (case is not normalised)
    assert accuracy(["entailment", "neutral", "Entailment"], ["entailment", "neutral", "entailment"]) == approx(200 / 3)


def test_accuracy_empty_is_zero_and_length_mismatch_raises():
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy(["a"], ["a", "b"])


# ---------------------------------------------------------------------------------------------
# tagging_prf: seqeval's default (conlleval) chunking, micro over all sentences
# ---------------------------------------------------------------------------------------------

def test_pos_tags_are_chunks_of_identical_tags():
    # gold: NOUN NOUN | VERB  -> 2 chunks; pred: NOUN | ADJ | VERB -> 3 chunks; only VERB matches
    scores = tagging_prf([["NOUN", "ADJ", "VERB"]], [["NOUN", "NOUN", "VERB"]])
    assert scores["precision"] == approx(100 / 3)
    assert scores["recall"] == approx(50.0)
    assert scores["f1"] == approx(100 * 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # 40


def test_sconj_and_sym_are_single_token_chunks():
    # The leading S reads as the IOBES "single" prefix: every SCONJ / SYM token is its own chunk.
    # gold SCONJ SCONJ -> 2 chunks; pred SCONJ ADV -> SCONJ chunk + ADV chunk; 1 match of 2 and 2
    scores = tagging_prf([["SCONJ", "ADV"]], [["SCONJ", "SCONJ"]])
    assert (scores["precision"], scores["recall"], scores["f1"]) == approx((50.0, 50.0, 50.0))
    # gold SYM SYM (2 chunks) vs pred SYM SYM (2 chunks): all match
    assert tagging_prf([["SYM", "SYM"]], [["SYM", "SYM"]])["f1"] == approx(100.0)
    # Contrast: NOUN NOUN is ONE chunk, so pred NOUN NOUN vs gold NOUN NOUN -> 1/1 as well, but
    # gold NOUN NOUN vs pred NOUN PROPN: gold 1 chunk, pred 2 chunks, no match
    scores = tagging_prf([["NOUN", "PROPN"]], [["NOUN", "NOUN"]])
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)


def test_adp_and_adv_are_different_chunk_types():
    # ADP -> type "DP", ADV -> type "DV": gold ADP ADP is one chunk, pred ADP | ADV two; no match
    assert tagging_prf([["ADP", "ADV"]], [["ADP", "ADP"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_ner_boundary_errors():
    # gold: [PER 0-1] [LOC 3]; pred: [PER 0] [PER 1] [LOC 3] -> 1 correct of 3 predicted, of 2 gold
    scores = tagging_prf([["B-PER", "B-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]])
    assert scores["precision"] == approx(100 / 3)
    assert scores["recall"] == approx(50.0)
    assert scores["f1"] == approx(40.0)


def test_i_after_o_or_other_type_starts_a_chunk():
    # I-PER after O starts a PER chunk: pred [PER 1-2] equals gold [PER 1-2]
    assert tagging_prf([["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]])["f1"] == approx(100.0)
    # I-PER after B-LOC starts a new PER chunk: pred [LOC 0] [PER 1] == gold [LOC 0] [PER 1]
    assert tagging_prf([["B-LOC", "I-PER"]], [["B-LOC", "B-PER"]])["f1"] == approx(100.0)
    # gold [PER 0-1] vs pred [LOC 0] [PER 1]: nothing matches
    assert tagging_prf([["B-LOC", "I-PER"]], [["B-PER", "I-PER"]])["f1"] == 0.0


def test_chunks_do_not_cross_sentences_and_micro_average():
    # pred sentences: [NOUN], [NOUN] -> 2 chunks (not merged); gold [NOUN], [ADJ]: 1 match of 2 / 2
    scores = tagging_prf([["NOUN"], ["NOUN"]], [["NOUN"], ["ADJ"]])
    assert (scores["precision"], scores["recall"]) == approx((50.0, 50.0))
    # micro over sentences: s1 gold 1 chunk (match), s2 gold 3 chunks pred 1 chunk (no match)
    # -> correct 1, predicted 2, gold 4: P 50, R 25, F1 2*.5*.25/.75
    scores = tagging_prf([["B-PER"], ["B-ORG", "I-ORG", "I-ORG"]], [["B-PER"], ["B-ORG", "B-ORG", "B-LOC"]])
    assert scores["precision"] == approx(50.0)
    assert scores["recall"] == approx(25.0)
    assert scores["f1"] == approx(100 * 2 * 0.5 * 0.25 / 0.75)


def test_tagging_zero_denominators_give_zero():
    assert tagging_prf([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # one predicted chunk, no gold chunk: P = 0/1, R = 0/0 -> 0
    assert tagging_prf([["B-PER"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert tagging_prf([[]], [[]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1 (English normalisation for every XQuAD / TyDiQA language)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The  Quick, brown fox!", "quick brown fox"),
    ("e-mail", "email"),                      # deleted, not replaced by a space
    ("U.S.A.", "usa"),
    ("Anne and the theatre", "anne and theatre"),  # whole words only: Anne, theatre stay
    ("A", ""),
    ("an apple a day", "apple day"),
    ("«the» end", "« » end"),                 # non-ASCII punctuation stays; "the" is a whole word
    ("  tabs\tand\nnewlines ", "tabs and newlines"),
    ("", ""),
])
def test_normalize_squad_answer(text, expected):
    assert normalize_squad_answer(text) == expected


def test_squad_exact_match():
    assert squad_exact_match("The Eiffel Tower.", "eiffel tower")
    assert not squad_exact_match("Eiffel", "Eiffel Tower")
    assert squad_exact_match("the", "a")       # both normalise to nothing
    # SQuAD normalisation ignores language: the Arabic article is not removed
    assert not squad_exact_match("كتاب", "الكتاب")


def test_squad_f1_token_overlap():
    # pred [big red barn], ref [red barn door]: 2 shared -> P = R = 2/3 -> F1 = 2/3
    assert squad_f1("the big red barn", "Red barn door") == approx(2 / 3)
    # repeated tokens count with multiplicity: [x x y] vs [x y y]: shared x1 y1 = 2 of 3 and 3
    assert squad_f1("x x y", "x y y") == approx(2 / 3)
    # [paris] vs [city of paris]: P = 1, R = 1/3 -> F1 = 2*(1/3)/(4/3) = 1/2
    assert squad_f1("Paris", "the city of Paris") == approx(0.5)


def test_squad_f1_is_zero_without_shared_tokens_even_when_both_empty():
    assert squad_f1("", "") == 0.0
    assert squad_f1("The", "an") == 0.0
    assert squad_f1("berlin", "paris") == 0.0
    assert squad_f1("", "paris") == 0.0


def test_squad_em_f1_max_over_references_and_missing_predictions():
    questions = [
        (["the city of Paris", "Paris"], "paris"),  # EM 1 (second reference), F1 1
        (["1990"], None),                           # unanswered: 0 and 0
        (["red barn door"], "the big red barn"),    # EM 0, F1 2/3
        (["e-mail"], "Email"),                      # EM 1, F1 1
    ]
    scores = squad_em_f1(questions)
    assert scores["exact_match"] == approx(100 * 2 / 4)
    assert scores["f1"] == approx(100 * (1 + 0 + 2 / 3 + 1) / 4)


def test_squad_em_f1_edge_cases():
    assert squad_em_f1([]) == {"exact_match": 0.0, "f1": 0.0}
    # an empty prediction: EM only when the reference normalises to nothing too, F1 always 0
    assert squad_em_f1([(["the"], ""), (["x"], "")]) == {"exact_match": approx(50.0), "f1": 0.0}
    with pytest.raises(ValueError):
        squad_em_f1([([], "x")])


# ---------------------------------------------------------------------------------------------
# MLQA (language-dependent normalisation)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, lang, expected", [
    ("«The» end…", "en", "end"),                 # Unicode punctuation deleted too
    ("Los Ángeles", "es", "ángeles"),
    ("El río; la casa", "es", "río casa"),
    ("Die Mauer", "de", "mauer"),
    ("Dieser Mann, dem", "de", "dieser mann"),   # "dieser" is not an article
    ("những con mèo", "vi", "con mèo"),
    ("The book", "hi", "the book"),              # hi: no articles removed
    ("The book", "zh", "the book"),              # zh: no articles removed
    ("الكتاب", "ar", "كتاب"),
    ("بالقلم", "ar", "ب قلم"),                   # ال inside a word is replaced by a space too
    ("北京大学", "zh", "北 京 大 学"),            # each CJK character is a token
    ("2008年北京奥运会", "zh", "2008 年 北 京 奥 运 会"),
    ("iPhone手机", "zh", "iphone 手 机"),
    ("北京，中国。", "zh", "北 京 中 国"),        # full-width punctuation deleted
    ("\u3400\u3400中", "zh", "\u3400\u3400 中"),  # U+3400 is outside U+4E00-U+9FA5: not split
    ("e-mail ＄5", "en", "email ＄5"),            # ＄ is a symbol (Sc), not punctuation: kept
])
def test_normalize_mlqa_answer(text, lang, expected):
    assert normalize_mlqa_answer(text, lang) == expected


def test_mlqa_unknown_language_raises():
    assert MLQA_LANGUAGES == ("en", "es", "de", "ar", "hi", "vi", "zh")
    with pytest.raises(ValueError):
        normalize_mlqa_answer("x", "fr")
    with pytest.raises(ValueError):
        mlqa_em_f1([(["x"], "x")], "fr")


def test_mlqa_chinese_mixed_segmentation_f1():
    # pred 北 京 大 学 (4 tokens) vs ref 北 京 (2): 2 shared -> P 1/2, R 1 -> F1 2/3
    assert mlqa_f1("北京大学", "北京", "zh") == approx(2 / 3)
    assert not mlqa_exact_match("北京大学", "北京", "zh")
    # Under SQuAD rules the same strings are single tokens without overlap
    assert squad_f1("北京大学", "北京") == 0.0
    # pred [2008 年] vs ref [2008 年 夏]: P 1, R 2/3 -> F1 0.8
    assert mlqa_f1("2008年", "2008年夏", "zh") == approx(0.8)


def test_mlqa_language_specific_articles_change_scores():
    # es: pred [río amazonas] vs ref [amazonas]: P 1/2, R 1 -> 2/3
    assert mlqa_f1("el río Amazonas", "Amazonas", "es") == approx(2 / 3)
    assert mlqa_exact_match("الكتاب", "كتاب", "ar")
    assert mlqa_exact_match("¿Dónde?", "dónde", "es")  # ¿ is Unicode punctuation
    assert not mlqa_exact_match("die Mauer", "Mauer", "hi")
    assert mlqa_exact_match("die Mauer", "Mauer", "de")
    assert mlqa_f1("", "", "en") == 0.0


def test_mlqa_em_f1_aggregate():
    questions = [
        (["الكتاب"], "كتاب"),      # EM 1, F1 1
        (["قلم أحمر"], "قلم"),      # [قلم] vs [قلم أحمر]: P 1, R 1/2 -> F1 2/3, EM 0
        (["x"], None),              # missing: 0, 0
    ]
    scores = mlqa_em_f1(questions, "ar")
    assert scores["exact_match"] == approx(100 / 3)
    assert scores["f1"] == approx(100 * (1 + 2 / 3) / 3)


# ---------------------------------------------------------------------------------------------
# BUCC: sets of (source id, English id) pairs
# ---------------------------------------------------------------------------------------------

def test_bucc_prf_sets_duplicates_and_order():
    gold = [("de-1", "en-1"), ("de-2", "en-2"), ("de-3", "en-3")]
    # predicted set {(1,1), (2,3), (4,4)}: the duplicate counts once; C = 1 -> P = R = F1 = 1/3
    predicted = [("de-1", "en-1"), ("de-1", "en-1"), ("de-2", "en-3"), ("de-4", "en-4")]
    scores = bucc_prf(predicted, gold)
    assert scores["precision"] == approx(100 / 3)
    assert scores["recall"] == approx(100 / 3)
    assert scores["f1"] == approx(100 / 3)
    # order of the two columns matters
    assert bucc_prf([("en-1", "de-1")], gold) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    # order of the pairs does not
    assert bucc_prf(list(reversed(gold)), gold) == {"f1": approx(100.0), "precision": approx(100.0), "recall": approx(100.0)}


def test_bucc_prf_unequal_precision_recall():
    gold = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]
    # C = 1 of 2 predicted, of 4 gold: P .5, R .25, F1 = 2*.5*.25/.75 = 1/3
    scores = bucc_prf([("a", "1"), ("b", "9")], gold)
    assert scores == {"precision": approx(50.0), "recall": approx(25.0), "f1": approx(100 / 3)}


def test_bucc_prf_empty_or_no_match_is_zero():
    assert bucc_prf([], [("a", "1")]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    assert bucc_prf([("b", "2")], [("a", "1")]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    assert bucc_prf([], []) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
