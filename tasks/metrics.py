"""The metric functions: one implementation, used by the trainables, `analysis` and `xstilts evaluate`.

All scores are percentages (0-100), as the XTREME scorer reports them.
"""
from __future__ import annotations

import re
import string
import unicodedata
import warnings
from collections import Counter
from typing import Callable, Iterable, Optional, Sequence

from seqeval.metrics import f1_score, precision_score, recall_score


def accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """100 x exact string matches / examples (XNLI, PAWS-X, Tatoeba)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        return 0.0
    return 100.0 * sum(p == g for p, g in zip(predictions, labels)) / len(labels)


def tagging_prf(predictions: Sequence[Sequence[str]], labels: Sequence[Sequence[str]]) -> dict[str, float]:
    """Chunk-level micro precision/recall/F1 as seqeval's default (conlleval) mode computes them.

    XTREME scores UD-POS this way too (not token accuracy): seqeval reads the first character of
    every tag as an IOBES prefix, so for POS a chunk is a run of identical tags.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predicted sentences for {len(labels)} gold sentences")
    gold = [list(s) for s in labels]
    pred = [list(s) for s in predictions]
    with warnings.catch_warnings():
        # seqeval warns "X seems not to be NE tag" for every POS tag: expected, see above.
        warnings.simplefilter("ignore", UserWarning)
        return {
            "precision": 100.0 * float(precision_score(gold, pred, zero_division=0)),
            "recall": 100.0 * float(recall_score(gold, pred, zero_division=0)),
            "f1": 100.0 * float(f1_score(gold, pred, zero_division=0)),
        }


def tagging_sentence_counts(predictions: Sequence[Sequence[str]], labels: Sequence[Sequence[str]]) -> list[tuple[int, int, int]]:
    """(true positives, false positives, false negatives) of chunks per sentence, chunks as
    `tagging_prf` reads them (seqeval's default mode): summed, 2tp / (2tp + fp + fn) is its F1."""
    from seqeval.metrics.sequence_labeling import get_entities

    counts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for predicted, gold in zip(predictions, labels):
            found, wanted = set(get_entities(list(predicted))), set(get_entities(list(gold)))
            hits = len(found & wanted)
            counts.append((hits, len(found) - hits, len(wanted) - hits))
    return counts


def token_accuracy(predictions: Sequence[Sequence[str]], labels: Sequence[Sequence[str]],
                   pad: Optional[str] = None) -> dict[str, float]:
    """{"accuracy": 100 x tokens whose predicted tag equals the gold tag / gold tokens}, over all
    sentences pooled (jiant's CCG supertagging metric). A prediction shorter than its gold
    sentence (words truncated away) is padded with `pad` (None: counted wrong) and a longer one
    cut, so truncation can only lower the score."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predicted sentences for {len(labels)} gold sentences")
    total = correct = 0
    for predicted, gold in zip(predictions, labels):
        predicted = list(predicted)[: len(gold)]
        predicted += [pad] * (len(gold) - len(predicted))
        total += len(gold)
        correct += sum(p == g for p, g in zip(predicted, gold))
    return {"accuracy": 100.0 * correct / total if total else 0.0}


# ---------------------------------------------------------------------------------------------
# Extractive QA: SQuAD v1.1 (XQuAD, TyDiQA-GoldP) and MLQA exact match / token F1.
#
# Both follow the official scorers' normalisation step by step (lower-case, delete punctuation,
# replace articles by a space, tokenise) so that `xstilts evaluate` reproduces XTREME's numbers.
# Articles are matched as whole words with `re`'s Unicode-aware \b, as the official scripts do.
# ---------------------------------------------------------------------------------------------

_ASCII_PUNCTUATION = frozenset(string.punctuation)  # the 32 ASCII punctuation characters
_SQUAD_ARTICLES = re.compile(r"\b(?:a|an|the)\b")

# MLQA's articles per answer language; ar and the languages with None are handled separately.
_MLQA_ARTICLES: dict[str, re.Pattern[str] | None] = {
    "en": _SQUAD_ARTICLES,
    "es": re.compile(r"\b(?:un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(?:ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(?:của|là|cái|chiếc|những)\b"),
    "ar": None,  # every occurrence of the letter pair "ال" (also inside words) becomes a space
    "hi": None,  # no articles
    "zh": None,  # no articles
}
MLQA_LANGUAGES: tuple[str, ...] = ("en", "es", "de", "ar", "hi", "vi", "zh")
_ARABIC_AL = "\u0627\u0644"  # ال
_CJK = re.compile("([\u4e00-\u9fa5])")  # the CJK range MLQA's mixed segmentation splits per char


def _squad_tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCTUATION)
    return _SQUAD_ARTICLES.sub(" ", text).split()


def normalize_squad_answer(text: str) -> str:
    """SQuAD v1.1 normalisation (English rules, used for every XQuAD/TyDiQA language):
    lower-case; delete the 32 characters of `string.punctuation` (e-mail -> email); replace the
    whole words a/an/the with a space; collapse whitespace. Returns the tokens joined by one space."""
    return " ".join(_squad_tokens(text))


def _is_mlqa_punctuation(ch: str) -> bool:
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def _mlqa_tokens(text: str, lang: str) -> list[str]:
    if lang not in _MLQA_ARTICLES:
        raise ValueError(f"MLQA normalisation has no rules for language {lang!r}; known: {', '.join(MLQA_LANGUAGES)}")
    text = "".join(ch for ch in text.lower() if not _is_mlqa_punctuation(ch))
    if lang == "ar":
        text = text.replace(_ARABIC_AL, " ")
    elif _MLQA_ARTICLES[lang] is not None:
        text = _MLQA_ARTICLES[lang].sub(" ", text)
    if lang == "zh":  # mixed segmentation: each CJK character is a token, the rest split on whitespace
        text = _CJK.sub(r" \1 ", text)
    return text.split()


def normalize_mlqa_answer(text: str, lang: str) -> str:
    """MLQA normalisation for answer language `lang` (en es de ar hi vi zh): lower-case; delete
    every Unicode punctuation character (category P*) and the ASCII `string.punctuation`; replace
    the language's whole-word articles with a space (ar: every "ال", even inside a word); tokenise
    on whitespace, zh with mixed segmentation (each U+4E00-U+9FA5 character its own token)."""
    return " ".join(_mlqa_tokens(text, lang))


def _token_f1(prediction_tokens: Sequence[str], reference_tokens: Sequence[str]) -> float:
    shared = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if shared == 0:  # also when both are empty
        return 0.0
    # Same operation order as the official scripts, so results agree to the last bit.
    precision = 1.0 * shared / len(prediction_tokens)
    recall = 1.0 * shared / len(reference_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_exact_match(prediction: str, reference: str) -> bool:
    return _squad_tokens(prediction) == _squad_tokens(reference)


def squad_f1(prediction: str, reference: str) -> float:
    """Token F1 (0-1) of the normalised answers; 0 when they share no token (also both empty)."""
    return _token_f1(_squad_tokens(prediction), _squad_tokens(reference))


def mlqa_exact_match(prediction: str, reference: str, lang: str) -> bool:
    return _mlqa_tokens(prediction, lang) == _mlqa_tokens(reference, lang)


def mlqa_f1(prediction: str, reference: str, lang: str) -> float:
    return _token_f1(_mlqa_tokens(prediction, lang), _mlqa_tokens(reference, lang))


# One question: (its reference answers, the predicted answer or None when the id was not predicted).
QAQuestion = tuple[Sequence[str], Optional[str]]


def qa_question_scores(questions: Iterable[QAQuestion], tokenize: Callable[[str], list[str]]) -> list[tuple[float, float]]:
    """(exact match 0/1, token F1 in [0, 1]) of each question: the max over its references; an
    unanswered question (prediction None) scores 0 for both."""
    scores = []
    for references, prediction in questions:
        if isinstance(references, str):
            raise TypeError("reference answers must be a sequence of strings, not one string")
        if not references:
            raise ValueError(f"question #{len(scores) + 1} has no reference answer")
        if prediction is None:
            scores.append((0.0, 0.0))
            continue
        predicted = tokenize(prediction)
        refs = [tokenize(r) for r in references]
        scores.append((float(max(predicted == r for r in refs)), max(_token_f1(predicted, r) for r in refs)))
    return scores


def qa_tokenizer(answer_normalization: str | None, lang: str) -> Callable[[str], list[str]]:
    """SQuAD's normalisation, or MLQA's for answer language `lang`."""
    if answer_normalization != "mlqa":
        return _squad_tokens
    if lang not in _MLQA_ARTICLES:
        raise ValueError(f"MLQA normalisation has no rules for language {lang!r}; known: {', '.join(MLQA_LANGUAGES)}")
    return lambda text: _mlqa_tokens(text, lang)


def _qa_em_f1(questions: Iterable[QAQuestion], tokenize: Callable[[str], list[str]]) -> dict[str, float]:
    scores = qa_question_scores(questions, tokenize)
    if not scores:
        return {"exact_match": 0.0, "f1": 0.0}
    return {"exact_match": 100.0 * sum(e for e, _ in scores) / len(scores),
            "f1": 100.0 * sum(f for _, f in scores) / len(scores)}


def squad_em_f1(questions: Iterable[QAQuestion]) -> dict[str, float]:
    """SQuAD v1.1 `exact_match` and `f1` (percent) over questions; each question scores the max
    over its reference answers; an unanswered question (prediction None) scores 0 for both."""
    return _qa_em_f1(questions, _squad_tokens)


def mlqa_em_f1(questions: Iterable[QAQuestion], lang: str) -> dict[str, float]:
    """MLQA `exact_match` and `f1` (percent) with the normalisation of answer language `lang`."""
    return _qa_em_f1(questions, qa_tokenizer("mlqa", lang))


# ---------------------------------------------------------------------------------------------
# BUCC 2018 bitext mining: precision / recall / F1 over sets of (source id, English id) pairs.
# ---------------------------------------------------------------------------------------------

def bucc_prf(predicted_pairs: Iterable[tuple[str, str]], gold_pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Both inputs are treated as sets (duplicates count once, order irrelevant); a pair matches
    only when both ids are equal, in order. C = |pred & gold|; all three metrics are 0 when C = 0."""
    predicted = {tuple(p) for p in predicted_pairs}
    gold = {tuple(g) for g in gold_pairs}
    correct = len(predicted & gold)
    if correct == 0:
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    precision = correct / len(predicted)
    recall = correct / len(gold)
    f1 = 2 * precision * recall / (precision + recall)
    return {"f1": f1 * 100, "precision": precision * 100, "recall": recall * 100}
