"""Synthetic multilingual tasks for the embedded default: generated on the fly, learnable, offline.

Four synthetic languages share one grammar and one set of concepts but differ in how much of
their vocabulary they share with English and in word order, so zero-shot transfer has something
to measure:
  en    the source language (real English words);
  near  70 % of content words identical to English, SVO like English;
  mid   30 % identical, SVO;
  far   no content word shared, SOV (the verb moves to the end).
Proper names (people, places, organisations) are the same strings in every language, as on
Wikipedia, which is what lets a tagger transfer.

Tasks (all generated from a seed, so every process regenerates exactly the same examples):
  synthetic_xnli   target, sentence-pair NLI (entailment / neutral / contradiction)
  synthetic_panx   target, IOB2 NER tagging (PER / LOC / ORG)
  synthetic_mnli   intermediate, English NLI from other sentences than synthetic_xnli
  synthetic_qqp    intermediate, English paraphrase detection (duplicate / not_duplicate)
  synthetic_squad  intermediate, SQuAD-like extractive QA in all four languages ("who <verb>s in
                   <place>?" / "where <verb>s <person>?" over a three-sentence context)
"""
from __future__ import annotations

import hashlib
import random

from xstilts.tasks.base import DataOptions, PairExample, SpanQAExample, TaggingExample

LANGUAGES = ("en", "near", "mid", "far")
_SHARED_FRACTION = {"en": 1.0, "near": 0.7, "mid": 0.3, "far": 0.0}
_VERB_FINAL = {"far"}
# Public names for xstilts.tasks.languages (the synthetic languages' distance from English).
SHARED_FRACTION = _SHARED_FRACTION
VERB_FINAL = frozenset(_VERB_FINAL)

NOUNS = (
    "dog cat house river book car tree city child teacher bird garden letter window table road "
    "mountain song doctor farmer boat bridge school market apple horse flower village student king"
).split()
VERBS = "sees finds likes paints builds buys reads visits cleans carries opens follows".split()
ADJECTIVES = "big small old new red green happy quiet bright dark".split()
FUNCTION_WORDS = {"the": "the", "not": "not", "in": "in", "for": "for", "with": "with", "and": "and"}
PERSONS_FIRST = "Maria Ahmed Kenji Olga Pedro Amara Lukas Mei Tomas Zainab Ivan Sofia".split()
# Names that are people in some sentences and places in others: only the context decides.
AMBIGUOUS_NAMES = ["Florence", "Jordan", "Victoria", "Chad", "Georgia"]
PERSONS_LAST = "Silva Tanaka Novak Okafor Berg Rossi Kim Haddad Larsen Mendes".split()
LOCATIONS = ["Lagos", "Kyoto", "Lima", "Oslo", "Cairo", "Porto Alegre", "New Delhi", "Quito", "Riga", "San Jose"]
ORGS = ["Acme Bank", "Nordic Air", "Sun Foods", "Delta Labs", "Orion Motors", "Blue Radio"]
PERSON_VERBS = "visits lives works travels arrives".split()
QUESTION_WORDS = ["who", "where"]  # synthetic_squad's questions; not in any other task's sentences


def _pseudo_word(word: str, language: str) -> str:
    """A stable made-up word for `word` in `language` (same in every process: hash, not RNG)."""
    digest = hashlib.sha256(f"{language}:{word}".encode()).digest()
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = 2 + digest[0] % 2
    return "".join(consonants[digest[1 + 2 * i] % 14] + vowels[digest[2 + 2 * i] % 5] for i in range(syllables))


def _lexicon(language: str) -> dict[str, str]:
    shared = _SHARED_FRACTION[language]
    lexicon = {}
    # Each word's translation depends on (language, word) only, so adding words changes no other.
    for word in NOUNS + VERBS + ADJECTIVES + list(FUNCTION_WORDS) + PERSON_VERBS + QUESTION_WORDS:
        # Whether a word is shared is a stable property of (language, word).
        keep = int(hashlib.sha256(f"share:{language}:{word}".encode()).hexdigest(), 16) % 1000 < shared * 1000
        lexicon[word] = word if keep else _pseudo_word(word, language)
    return lexicon


_LEXICONS = {language: _lexicon(language) for language in LANGUAGES}


def _render(words: list[str], language: str) -> str:
    lexicon = _LEXICONS[language]
    return " ".join(lexicon.get(w, w) for w in words)


def _clause(rng: random.Random, language: str, subject, verb, obj, negated=False) -> list[str]:
    """subject/obj are word lists (noun phrases); word order depends on the language."""
    verb_group = (["not"] if negated else []) + [verb]
    if language in _VERB_FINAL:
        return subject + obj + verb_group
    return subject + verb_group + obj


def _noun_phrase(rng: random.Random, noun: str, adjective: str | None) -> list[str]:
    return ["the"] + ([adjective] if adjective else []) + [noun]


def _nli_example(rng: random.Random, language: str) -> PairExample:
    """Premise "the S V the ADJ O"; the hypothesis drops the adjective (entailment), swaps it for
    another one (neutral: a claim the premise does not support) or negates the verb
    (contradiction). Like real NLI data, the hypothesis alone carries much of the signal."""
    subject, obj = rng.sample(NOUNS, 2)
    verb = rng.choice(VERBS)
    adjective, other_adjective = rng.sample(ADJECTIVES, 2)
    premise = _clause(rng, language, _noun_phrase(rng, subject, None), verb, _noun_phrase(rng, obj, adjective))
    label = rng.choice(("entailment", "neutral", "contradiction"))
    if label == "entailment":
        hypothesis = _clause(rng, language, _noun_phrase(rng, subject, None), verb, _noun_phrase(rng, obj, None))
    elif label == "contradiction":
        hypothesis = _clause(rng, language, _noun_phrase(rng, subject, None), verb, _noun_phrase(rng, obj, None), negated=True)
    else:
        hypothesis = _clause(rng, language, _noun_phrase(rng, subject, None), verb, _noun_phrase(rng, obj, other_adjective))
    return PairExample(_render(premise, language), _render(hypothesis, language), label)


def _paraphrase_example(rng: random.Random, language: str) -> PairExample:
    subject, obj = rng.sample(NOUNS, 2)
    verb = rng.choice(VERBS)
    adjective = rng.choice(ADJECTIVES)
    first = _clause(rng, language, _noun_phrase(rng, subject, adjective), verb, _noun_phrase(rng, obj, None))
    if rng.random() < 0.5:
        label = "duplicate"  # the same statement, the adjective moved into a second sentence
        second = _clause(rng, language, _noun_phrase(rng, subject, None), verb, _noun_phrase(rng, obj, None))
        second = second + ["and"] + ["the", subject] + [adjective]
    else:
        label = "not_duplicate"  # subject and object swapped: same words, another meaning
        second = _clause(rng, language, _noun_phrase(rng, obj, adjective), verb, _noun_phrase(rng, subject, None))
    return PairExample(_render(first, language), _render(second, language), label)


def _entity(rng: random.Random) -> tuple[list[str], str]:
    kind = rng.choice(("PER", "LOC", "ORG"))
    if kind == "PER":
        return [rng.choice(PERSONS_FIRST + AMBIGUOUS_NAMES), rng.choice(PERSONS_LAST)], kind
    if kind == "LOC":
        return rng.choice(LOCATIONS + AMBIGUOUS_NAMES).split(), kind
    return rng.choice(ORGS).split(), kind


def _ner_example(rng: random.Random, language: str) -> TaggingExample:
    lexicon = _LEXICONS[language]
    entity, kind = _entity(rng)
    place = rng.choice(LOCATIONS + AMBIGUOUS_NAMES).split()
    if rng.random() < 0.3:  # "<entity> ... in <name>": a one-word person name after "in" is rare but real
        place = [rng.choice(AMBIGUOUS_NAMES)]
    noun = rng.choice(NOUNS)
    verb = rng.choice(PERSON_VERBS)
    # "<entity> <verb> in <place> with the <noun>", verb last in SOV languages
    parts: list[tuple[list[str], str]] = [(entity, kind)]
    rest = [(["in"], "O"), (place, "LOC"), (["with", "the", noun], "O")]
    parts += rest + [([verb], "O")] if language in _VERB_FINAL else [([verb], "O")] + rest
    tokens, tags = [], []
    for words, tag in parts:
        for i, word in enumerate(words):
            tokens.append(lexicon.get(word, word) if tag == "O" else word)
            tags.append("O" if tag == "O" else ("B-" if i == 0 else "I-") + tag)
    return TaggingExample(tuple(tokens), tuple(tags))


def _qa_example(rng: random.Random, language: str) -> SpanQAExample:
    """A context of three sentences "<person> <verb> in <place> with the <noun> ." (distinct
    people, places and verbs; verb last in SOV languages) and a question about one of them:
    "who <verb> in <place> ?" (answer: the person) or "where <verb> <person> ?" (answer: the
    place). Names are the same strings in every language, so the answer is too. The loader sets
    `id`."""
    lexicon = _LEXICONS[language]
    verb_final = language in _VERB_FINAL
    people = [f"{first} {last}" for first, last in zip(rng.sample(PERSONS_FIRST, 3), rng.sample(PERSONS_LAST, 3))]
    places = rng.sample(LOCATIONS, 3)
    verbs = [lexicon[v] for v in rng.sample(PERSON_VERBS, 3)]
    context, offsets = [], {}  # offsets: name -> character offset in the context
    for person, place, verb in zip(people, places, verbs):
        rest = [lexicon["in"], place, lexicon["with"], lexicon["the"], lexicon[rng.choice(NOUNS)]]
        for word in [person] + (rest + [verb] if verb_final else [verb] + rest) + ["."]:
            if word in (person, place):
                offsets[word] = len(" ".join(context + [""]))
            context.append(word)
    asked = rng.randrange(3)
    person, place, verb = people[asked], places[asked], verbs[asked]
    if rng.random() < 0.5:
        question = [lexicon["who"]] + ([lexicon["in"], place, verb] if verb_final else [verb, lexicon["in"], place])
        answer = person
    else:
        question = [lexicon["where"]] + ([person, verb] if verb_final else [verb, person])
        answer = place
    return SpanQAExample("", " ".join(question + ["?"]), " ".join(context), (answer,), (offsets[answer],))


_GENERATORS = {"nli": _nli_example, "paraphrase": _paraphrase_example, "ner": _ner_example, "qa": _qa_example}
_SIZES = {"train": 1000, "dev": 300}
# Sentence-level label noise (as annotators disagree on real data): keeps scores off the ceiling,
# so learning rates and intermediate tasks make a visible difference.
_LABEL_NOISE = 0.12


def _with_noise(rng: random.Random, example, labels: tuple[str, ...]):
    if isinstance(example, PairExample) and rng.random() < _LABEL_NOISE:
        return PairExample(example.text_a, example.text_b, rng.choice([l for l in labels if l != example.label]))
    return example


_LABELS = {"nli": ("entailment", "neutral", "contradiction"), "paraphrase": ("duplicate", "not_duplicate")}


def synthetic_loader(generator: str, salt: str):
    """A TaskSpec loader for one generator; `salt` keeps tasks of one generator apart."""

    def load(split: str, language: str, options: DataOptions) -> list:
        seed = f"{salt}:{generator}:{split}:{language}:{options.seed}"
        rng = random.Random(int(hashlib.sha256(seed.encode()).hexdigest(), 16))
        size = _SIZES[split] if options.max_examples is None else min(_SIZES[split], options.max_examples)
        examples = [_GENERATORS[generator](rng, language) for _ in range(size)]
        if generator in _LABELS:
            examples = [_with_noise(rng, e, _LABELS[generator]) for e in examples]
        if generator == "qa":  # predictions are keyed by id: unique within a split and language
            examples = [SpanQAExample(f"{salt}-{split}-{language}-{i}", e.question, e.context, e.answers, e.answer_starts)
                        for i, e in enumerate(examples)]
        return examples

    return load


def corpus(sentences_per_language: int = 2000, seed: int = 0) -> list[str]:
    """Unlabelled multilingual text from all generators: for the tokenizer and MLM pre-training."""
    rng = random.Random(seed)
    lines = []
    for language in LANGUAGES:
        for i in range(sentences_per_language):
            kind = ("nli", "paraphrase", "ner")[i % 3]
            example = _GENERATORS[kind](rng, language)
            if isinstance(example, TaggingExample):
                lines.append(" ".join(example.tokens))
            else:
                lines.append(example.text_a)
                lines.append(example.text_b)
    return lines


def synthetic_retrieval_loader(salt: str, size: int = 200):
    """Tatoeba-like parallel sentences: line i of a language translates line i of English (same
    concepts, that language's words and word order); one `RetrievalCorpus` per language."""
    from xstilts.tasks.base import RetrievalCorpus

    def load(split: str, language: str, options: DataOptions) -> list:
        seed = f"{salt}:retrieval:{split}:{options.seed}"  # the same English side for every language
        rng = random.Random(int(hashlib.sha256(seed.encode()).hexdigest(), 16))
        n = size if options.max_examples is None else min(size, options.max_examples)
        pairs = []
        for _ in range(n):
            subject, obj = rng.sample(NOUNS, 2)
            verb, adjective = rng.choice(VERBS), rng.choice(ADJECTIVES)
            words = {l: _clause(rng, l, _noun_phrase(rng, subject, None), verb, _noun_phrase(rng, obj, adjective))
                     for l in ("en", language)}
            pairs.append((_render(words[language], language), _render(words["en"], "en")))
        ids = tuple(str(i) for i in range(n))
        return [RetrievalCorpus(ids, tuple(p[0] for p in pairs), ids, tuple(p[1] for p in pairs),
                                tuple((i, i) for i in ids))]

    return load
