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
  synthetic_xvnli  target, XVNLI-like visual NLI: region features of synthetic scenes (object
                   prototypes) and hypotheses in the four languages (section "Multimodal" below)
  synthetic_marvl  target, MaRVL-like true/false statements about a pair of synthetic images
"""
from __future__ import annotations

import hashlib
import random

from xstilts.tasks.base import SPLITS_WITH_TEST, DataOptions, PairExample, SpanQAExample, TaggingExample

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
# "test" is generated like "dev", from its own seed (the split name is part of it): the held-out
# split `xstilts predict` writes submission files for (xstilts.tasks.base.SPLITS_WITH_TEST).
_SIZES = {"train": 1000, "dev": 300, "test": 300}
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

    load.splits = SPLITS_WITH_TEST
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

    load.splits = SPLITS_WITH_TEST
    return load


# ---------------------------------------------------------------------------------------------
# Multimodal: synthetic images as region features, hypotheses in the synthetic languages
# ---------------------------------------------------------------------------------------------
#
# An "image" is a scene: a subject and an object (each a noun with an adjective), what the
# subject does (a verb, pictured as a relation region, as a region of two people shaking hands
# would be) and one or two distractor objects. Its regions are the feature vectors an object
# detector would give: each object region is the sum of its noun's and its adjective's
# prototype (fixed sparse non-negative vectors of IGLUE's 2048 dimensions, like pooled CNN
# features) plus noise; the verb region is the verb's prototype; one background region is noise
# only. Boxes and image sizes are random. The image id spells the scene, so any process rebuilds
# the same features from the id alone (`SyntheticImageStore`), the way a worker reads a real
# store by id.
#
# synthetic_xvnli (visual NLI, XVNLI-like; the image is the premise) labels a hypothesis, a
# clause in the example's language, like synthetic_xnli labels its hypotheses:
#   entailment     "the S V the O" or "the S V the A O" (A the object's adjective in the image)
#   neutral        "the S V the A' O" (another adjective than the image shows)
#   contradiction  "the S not V the O", or "the S V the X" with X nowhere in the image
# so the text alone decides some cases ("not") and the image the others. synthetic_marvl
# (MaRVL-like) labels a statement about a left and a right image true or false.

_MM_PROTOTYPE_ACTIVE = 48  # non-zero dimensions of a prototype
_MM_NOISE = 0.15
# The pictured world is smaller than the text's (a few objects and attributes seen often), so a
# tiny study learns which region goes with which word from a few hundred English examples.
VISUAL_NOUNS = NOUNS[:8]
VISUAL_ADJECTIVES = ADJECTIVES[:4]


def _prototype(name: str):
    import numpy as np

    from xstilts.tasks.iglue import FEATURE_DIM

    rng = np.random.default_rng(int(hashlib.sha256(f"prototype:{name}".encode()).hexdigest()[:16], 16))
    vector = np.zeros(FEATURE_DIM, dtype=np.float32)
    vector[rng.choice(FEATURE_DIM, _MM_PROTOTYPE_ACTIVE, replace=False)] = rng.uniform(1.0, 3.0, _MM_PROTOTYPE_ACTIVE)
    return vector


def _scene_id(key: str, objects: list[tuple[str, str]], verb: str) -> str:
    """An image id that spells its scene: "<key>|noun.adj,noun.adj,...|verb"."""
    return f"{key}|{','.join(f'{noun}.{adjective}' for noun, adjective in objects)}|{verb}"


def _parse_scene(image_id: str) -> tuple[list[tuple[str, str]], str]:
    try:
        _, objects, verb = image_id.rsplit("|", 2)
        pairs = [tuple(item.split(".")) for item in objects.split(",")]
    except ValueError:
        raise ValueError(f"{image_id!r} is not a synthetic image id") from None
    if verb not in VERBS or not pairs or any(len(p) != 2 or p[0] not in NOUNS or p[1] not in ADJECTIVES for p in pairs):
        raise ValueError(f"{image_id!r} is not a synthetic image id")
    return [(noun, adjective) for noun, adjective in pairs], verb


class SyntheticImageStore:
    """The synthetic tasks' feature store: region features rebuilt from the image id (same
    interface as `xstilts.tasks.iglue.FeatureStore`)."""

    def __init__(self, spec):
        self.spec, self.name = spec, f"synthetic:{spec.path}"

    def missing(self, image_ids) -> set[str]:
        absent = set()
        for image in image_ids:
            try:
                _parse_scene(image)
            except ValueError:
                absent.add(image)
        return absent

    def raw(self, image_id: str):
        import numpy as np

        objects, verb = _parse_scene(image_id)
        rng = np.random.default_rng(int(hashlib.sha256(f"image:{image_id}".encode()).hexdigest()[:16], 16))
        vectors = [_prototype(f"noun:{noun}") + _prototype(f"adjective:{adjective}") for noun, adjective in objects]
        vectors.append(_prototype(f"verb:{verb}"))
        vectors.append(np.zeros_like(vectors[0]))  # background
        features = np.stack(vectors)
        features += np.abs(rng.normal(0.0, _MM_NOISE, features.shape)).astype(np.float32)
        features = features[rng.permutation(len(features))]
        height, width = float(rng.integers(300, 640)), float(rng.integers(300, 640))
        corners = rng.uniform(0.0, 1.0, (len(features), 2, 2))
        low, high = corners.min(axis=1), corners.max(axis=1)
        boxes = np.concatenate([low, high], axis=1) * np.array([width, height, width, height])
        return features.astype(np.float32), boxes.astype(np.float32), height, width

    def regions(self, image_id: str):
        from xstilts.tasks.iglue import prepare_regions

        features, boxes, height, width = self.raw(image_id)
        return prepare_regions(features, boxes, height, width, self.spec.max_regions, self.spec.global_region)


def _scene(rng: random.Random, distractors: int) -> tuple[list[tuple[str, str]], str]:
    """[(subject noun, adj), (object noun, adj), distractors...], verb: distinct nouns."""
    nouns = rng.sample(VISUAL_NOUNS, 2 + distractors)
    return [(noun, rng.choice(VISUAL_ADJECTIVES)) for noun in nouns], rng.choice(VERBS)


def _visual_nli_example(rng: random.Random, language: str, key: str, store: str):
    from xstilts.tasks.iglue import MultimodalExample

    objects, verb = _scene(rng, rng.choice((1, 2)))
    (subject, _), (obj, adjective) = objects[0], objects[1]
    label = rng.choice(("entailment", "neutral", "contradiction"))
    negated, shown = False, None
    if label == "entailment":
        shown = adjective if rng.random() < 0.5 else None
    elif label == "neutral":
        shown = rng.choice([a for a in VISUAL_ADJECTIVES if a != adjective])
    elif rng.random() < 0.5:
        negated = True
    else:
        obj = rng.choice([n for n in VISUAL_NOUNS if n not in {noun for noun, _ in objects}])
    hypothesis = _clause(rng, language, _noun_phrase(rng, subject, None), verb, _noun_phrase(rng, obj, shown), negated)
    return MultimodalExample(_render(hypothesis, language), (_scene_id(key, objects, verb),), label, store, key)


def _visual_reasoning_example(rng: random.Random, language: str, key: str, store: str):
    """A statement "the S V the A O" about a left and a right image: true when one of them shows
    it; false when the adjective or the object differs from both."""
    from xstilts.tasks.iglue import MultimodalExample

    scenes = [_scene(rng, 1), _scene(rng, 1)]
    objects, verb = scenes[rng.randrange(2)]
    (subject, _), (obj, adjective) = objects[0], objects[1]
    label = rng.choice(("true", "false"))
    if label == "false":
        described = {(o[0][0], v, o[1][0], o[1][1]) for o, v in scenes}
        while (subject, verb, obj, adjective) in described:
            adjective = rng.choice(VISUAL_ADJECTIVES)
    statement = _clause(rng, language, _noun_phrase(rng, subject, None), verb, _noun_phrase(rng, obj, adjective))
    images = tuple(_scene_id(f"{key}-img{i}", o, v) for i, (o, v) in enumerate(scenes))
    return MultimodalExample(_render(statement, language), images, label, store, key)


_MM_GENERATORS = {"visual_nli": _visual_nli_example, "visual_reasoning": _visual_reasoning_example}


def synthetic_multimodal_loader(generator: str, salt: str):
    """A TaskSpec loader of synthetic multimodal examples (`MultimodalExample`, features from
    `SyntheticImageStore`); the same scenes in every language, the text in that language."""
    from xstilts.tasks.iglue import StoreSpec

    store = StoreSpec("synthetic", salt).to_string()

    def load(split: str, language: str, options: DataOptions) -> list:
        # The scenes do not depend on the language (a test set's images are shared by its languages).
        seed = f"{salt}:{generator}:{split}:{options.seed}"
        rng = random.Random(int(hashlib.sha256(seed.encode()).hexdigest(), 16))
        size = _SIZES[split] if options.max_examples is None else min(_SIZES[split], options.max_examples)
        return [_MM_GENERATORS[generator](rng, language, f"{salt}-{split}-{i}", store) for i in range(size)]

    return load
