"""synthetic_squad: the SQuAD-like QA intermediate of the tiny NLI-vs-QA study, and the language
metadata (tasks/languages.py) the research-question reports group by."""
from __future__ import annotations

import hashlib

from xstilts.tasks import get_task
from xstilts.tasks.base import DataOptions, SpanQAExample
from xstilts.tasks.languages import DISTANCE_BUCKETS, LANGUAGES, distance_of, family_of, language_info
from xstilts.tasks.modeling import encode
from xstilts.tasks.synthetic import LOCATIONS, PERSONS_FIRST, PERSONS_LAST, corpus, synthetic_loader

SQUAD = get_task("synthetic_squad")


def test_registered_as_span_qa_in_every_synthetic_language():
    assert (SQUAD.kind, SQUAD.metric, SQUAD.languages) == ("span_qa", "f1", ("en", "near", "mid", "far"))


def test_examples_are_deterministic_answerable_and_uniquely_identified():
    options = DataOptions(max_examples=200)
    for language in SQUAD.languages:
        examples = SQUAD.load("train", language, options)
        assert examples == SQUAD.load("train", language, options)  # regenerated identically
        assert len(examples) == 200 and all(isinstance(e, SpanQAExample) for e in examples)
        assert len({e.id for e in examples}) == 200
        for e in examples:
            (answer,), (start,) = e.answers, e.answer_starts
            assert e.context[start:start + len(answer)] == answer
            assert e.context.count(answer) == 1  # the answer is unambiguous in its context
            first = answer.split()[0]
            assert first in PERSONS_FIRST and answer.split()[1] in PERSONS_LAST or answer in LOCATIONS
    # dev is another sample than train, and another seed gives other examples
    assert SQUAD.load("dev", "en", options)[0] != SQUAD.load("train", "en", options)[0]
    assert SQUAD.load("train", "en", DataOptions(max_examples=5, seed=1)) != SQUAD.load("train", "en", DataOptions(max_examples=5))


def test_languages_differ_in_words_and_order_but_share_the_names():
    en, far = (SQUAD.load("train", lang, DataOptions(max_examples=50)) for lang in ("en", "far"))
    # English questions start with "who"/"where"; far renders them as made-up words, verb last
    assert {e.question.split()[0] for e in en} == {"who", "where"}
    assert not {e.question.split()[0] for e in far} & {"who", "where"}
    assert all(e.question.endswith(" ?") for e in en + far)


def test_features_carry_the_answer_span(tokenizer):
    examples = SQUAD.load("train", "mid", DataOptions(max_examples=20))
    features = encode(SQUAD, examples, tokenizer, max_length=SQUAD.max_length)
    assert len(features) >= 20  # one window per example at least
    answered = [f for f in features if f.start_position != f.cls_index]
    assert len({f.example_id for f in answered}) == 20  # every example's answer lies in some window
    for f in answered:
        assert f.end_position >= f.start_position


def test_adding_synthetic_squad_left_the_other_synthetic_data_unchanged():
    # Digests of the data before synthetic_squad was added: the lexicon of every other word, the
    # targets' examples and the pre-training corpus (so the cached embedded model) are the same.
    digest = lambda x: hashlib.sha256(repr(x).encode()).hexdigest()[:16]  # noqa: E731
    far = DataOptions(max_examples=50)
    assert digest(synthetic_loader("nli", "xnli")("train", "far", far)) == "7a1ba863c411d1b2"
    assert digest(synthetic_loader("ner", "panx")("train", "far", far)) == "cad43be6d2fd45e6"
    assert digest(corpus(50)) == "ab522e075c20731c"


def test_every_task_language_has_metadata():
    from xstilts.tasks import TASKS

    used = {lang for task in TASKS.values() for lang in task.languages + (task.train_language,)}
    assert used <= set(LANGUAGES), sorted(used - set(LANGUAGES))
    assert all(info.distance in DISTANCE_BUCKETS for info in LANGUAGES.values())
    assert (family_of("en"), distance_of("en")) == ("Indo-European", "source")
    assert (family_of("de"), distance_of("de")) == ("Indo-European", "close")
    assert (family_of("hi"), distance_of("hi")) == ("Indo-European", "medium")
    assert (family_of("sw"), distance_of("sw")) == ("Niger-Congo", "distant")
    assert [distance_of(l) for l in ("near", "mid", "far")] == ["close", "medium", "distant"]
    assert [LANGUAGES[l].vocabulary_overlap for l in ("near", "mid", "far")] == [0.7, 0.3, 0.0]
    assert language_info("xx").family == "unknown"
