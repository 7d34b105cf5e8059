"""The multiple-choice and extractive-QA heads end to end on tiny models: encode -> batches ->
collate -> model(**batch).loss (the train loop's generic path), predict, score with the shared
metrics; the QA window labelling and n-best decoding on hand-built cases."""
from __future__ import annotations

import pytest
import torch
from types import SimpleNamespace

from xstilts.tasks.base import MultipleChoiceExample, SpanQAExample, TaskSpec

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from xstilts.tasks.modeling import (TRAINABLE_KINDS, Features, MultipleChoiceFeatures, QAFeatures,  # noqa: E402
                            batches_by_length, choice_label, collate, decode_answers, effective_doc_stride,
                            encode, evaluate, head_class, load_model_for_task, majority_baseline, predict, score)

pytestmark = pytest.mark.usefixtures("one_thread")  # one_thread, tokenizer_dir, tokenizer: tests/conftest.py


def _no_data(split, language, options):
    return []


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory, tokenizer):
    """A bare tiny encoder folder (what phase 2 leaves behind): XLM-R, 2 layers, hidden 32."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    folder = tmp_path_factory.mktemp("tiny-encoder")
    XLMRobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _train(model, features, pad_token_id, steps: int, batch_size: int = 4, lr: float = 3e-3) -> list[float]:
    """The train loop's generic path, nothing task-specific: losses per step."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    while len(losses) < steps:
        for indices in batches_by_length(features, batch_size):
            loss = model(**collate([features[i] for i in indices], pad_token_id)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return losses


def _mean(values):
    return sum(values) / len(values)


def test_trainable_kinds_cover_every_head_but_retrieval():
    assert set(TRAINABLE_KINDS) == {"classification", "tagging", "multiple_choice", "span_qa", "multimodal_classification"}
    with pytest.raises(ValueError, match="no training head"):
        head_class(TaskSpec("toy_bucc", "retrieval", ("de",), (), "f1", loader=_no_data))


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------

MC = TaskSpec("toy_mc", "multiple_choice", ("en",), ("0", "1"), "accuracy", loader=_no_data, max_length=32)
NOUNS = "dog cat house river book car tree city".split()


def _mc_examples(n: int = 8) -> list[MultipleChoiceExample]:
    """The right choice is always a "bright" word, the wrong one a "dark" word (learnable fast)."""
    bright, dark = "happy bright big green".split(), "dark quiet small old".split()
    examples = []
    for i in range(n):
        right, wrong = bright[i % 4], dark[(i + 1) % 4]
        label = i % 2
        choices = (right, wrong) if label == 0 else (wrong, right)
        examples.append(MultipleChoiceExample(f"the child sees the {NOUNS[i % len(NOUNS)]}", choices, label, question="what?"))
    return examples


def test_multiple_choice_collate_is_batch_by_choices_by_length(tokenizer):
    examples = [MultipleChoiceExample("the dog", ("red", "big old green"), 1),
                MultipleChoiceExample("the happy child sees the bird in the garden", ("yes", "no"), 0, question="why?")]
    features = encode(MC, examples, tokenizer)
    assert all(isinstance(f, MultipleChoiceFeatures) and len(f.input_ids) == 2 for f in features)
    # each choice is the pair (context [+ question], choice)
    expected = tokenizer("the happy child sees the bird in the garden why?", "no")["input_ids"]
    assert features[1].input_ids[1] == expected
    batch = collate(features, tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    width = max(len(ids) for f in features for ids in f.input_ids)
    assert batch["input_ids"].shape == (2, 2, width) and batch["attention_mask"].shape == (2, 2, width)
    assert batch["labels"].tolist() == [1, 0]
    first = features[0].input_ids[0]
    assert batch["attention_mask"][0, 0].tolist() == [1] * len(first) + [0] * (width - len(first))
    assert batch["input_ids"][0, 0, len(first):].eq(tokenizer.pad_token_id).all()
    # batches are grouped by the longest choice
    assert batches_by_length(features, 1) == [[0], [1]]


def test_multiple_choice_label_mapping(tokenizer, encoder_dir):
    lettered = TaskSpec("toy_csqa", "multiple_choice", ("en",), ("A", "B", "C"), "accuracy", loader=_no_data)
    assert [choice_label(lettered, i) for i in range(3)] == ["A", "B", "C"]
    assert choice_label(TaskSpec("toy", "multiple_choice", ("en",), (), "accuracy", loader=_no_data), 4) == "4"
    with pytest.raises(ValueError):
        choice_label(lettered, 3)
    examples = [MultipleChoiceExample("the dog", ("a", "b", "c"), label) for label in (2, 0, 1)]
    features = encode(lettered, examples, tokenizer)

    class FixedChoice(torch.nn.Module):  # scores choice `row % 3` highest for example `row`
        def forward(self, input_ids, attention_mask):
            logits = torch.zeros(input_ids.shape[:2])
            logits[torch.arange(len(logits)), torch.tensor([2, 0, 0])] = 1.0
            return SimpleNamespace(logits=logits)

    predictions = predict(lettered, FixedChoice(), features, tokenizer.pad_token_id, batch_size=8)
    assert predictions == ["C", "A", "A"]
    assert score(lettered, predictions, examples) == {"accuracy": pytest.approx(200 / 3)}
    # the config names the choice slots
    model = load_model_for_task(lettered, encoder_dir)
    assert model.config.id2label == {0: "A", 1: "B", 2: "C"} and model.config.label2id["C"] == 2
    # more choices than labelled slots, or ragged choice counts, are refused clearly
    with pytest.raises(ValueError, match="only 3 choice labels"):
        encode(lettered, [MultipleChoiceExample("x", ("a", "b", "c", "d"), 0)], tokenizer)
    with pytest.raises(ValueError, match="different numbers of choices"):
        encode(lettered, [MultipleChoiceExample("x", ("a", "b"), 0), MultipleChoiceExample("x", ("a", "b", "c"), 0)], tokenizer)


def test_multiple_choice_trains_predicts_and_scores(tokenizer, encoder_dir):
    examples = _mc_examples()
    model = load_model_for_task(MC, encoder_dir)
    assert model.config.id2label == {0: "0", 1: "1"}
    features = encode(MC, examples, tokenizer)
    losses = _train(model, features, tokenizer.pad_token_id, steps=30)
    assert _mean(losses[-4:]) < 0.7 * _mean(losses[:4])
    predictions = predict(MC, model, features, tokenizer.pad_token_id)
    assert set(predictions) <= {"0", "1"} and len(predictions) == len(examples)
    scores = evaluate(MC, model, tokenizer, examples)
    assert scores == score(MC, predictions, examples)
    assert scores["accuracy"] >= 75.0  # it fits its 8 training examples
    assert majority_baseline(MC, examples, examples) == {"accuracy": 50.0}


# ---------------------------------------------------------------------------------------------
# Extractive QA
# ---------------------------------------------------------------------------------------------

QA = TaskSpec("toy_qa", "span_qa", ("en", "de"), (), "f1", loader=_no_data, max_length=32)
LONG_CONTEXT = ("Maria Silva sees the big dog in Lagos with the red book and the old teacher reads the "
                "letter in Oslo for the happy child while the green bird visits the quiet garden near "
                "the bright river and the small cat opens the window of the dark house")


def _window_text(feature: QAFeatures, start: int, end: int) -> str:
    return feature.context[feature.offsets[start][0]:feature.offsets[end][1]]


def _context_span(feature: QAFeatures) -> tuple[int, int]:
    positions = [k for k, o in enumerate(feature.offsets) if o is not None]
    return positions[0], positions[-1]


def test_doc_stride_is_scaled_for_short_windows():
    assert effective_doc_stride(384) == 128  # HF run_qa's default
    assert effective_doc_stride(64) == 21
    assert effective_doc_stride(32, 8) == 8


def test_qa_windows_cover_the_context_with_the_requested_overlap(tokenizer):
    answer = "the old teacher"
    example = SpanQAExample("q", "who reads the letter", LONG_CONTEXT, (answer,), (LONG_CONTEXT.index(answer),))
    features = encode(QA, [example], tokenizer, max_length=32, doc_stride=8)
    assert len(features) >= 3 and all(len(f.input_ids) <= 32 for f in features)
    assert {f.example_index for f in features} == {0} and {f.example_id for f in features} == {"q"}
    # consecutive windows share exactly `doc_stride` context tokens; together they cover it all
    for before, after in zip(features, features[1:]):
        tail = [o for o in before.offsets if o is not None][-8:]
        head = [o for o in after.offsets if o is not None][:8]
        assert tail == head
    assert features[0].offsets[_context_span(features[0])[0]][0] == 0
    assert features[-1].offsets[_context_span(features[-1])[1]][1] == len(LONG_CONTEXT)
    # a window labels the answer's tokens when it holds the whole answer, else CLS
    holding = [f for f in features if f.start_position != f.cls_index]
    assert holding
    for f in features:
        if f.start_position == f.cls_index:
            assert f.end_position == f.cls_index
        else:
            assert _window_text(f, f.start_position, f.end_position) == answer
    batch = collate(features, tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "start_positions", "end_positions"}


def _answer_across_a_window_boundary(tokenizer) -> tuple[SpanQAExample, list[QAFeatures]]:
    """An answer that starts inside window 0 and ends after it, but lies wholly in window 1."""
    question = "who reads the letter"
    probe = encode(QA, [SpanQAExample("p", question, LONG_CONTEXT, (), ())], tokenizer, max_length=32, doc_stride=8)
    first_end = probe[0].offsets[_context_span(probe[0])[1]][1]  # last character window 0 holds
    second_start = probe[1].offsets[_context_span(probe[1])[0]][0]
    words, position = [], 0
    for word in LONG_CONTEXT.split(" "):
        words.append((position, position + len(word)))
        position += len(word) + 1
    start = next(s for s, e in words if s >= second_start)
    end = next(e for s, e in words if e > first_end)
    assert start < first_end < end
    answer = LONG_CONTEXT[start:end]
    example = SpanQAExample("x1", question, LONG_CONTEXT, (answer,), (start,))
    return example, encode(QA, [example], tokenizer, max_length=32, doc_stride=8)


def test_answer_cut_by_a_window_boundary_is_labelled_and_decoded_from_the_window_holding_it(tokenizer):
    example, features = _answer_across_a_window_boundary(tokenizer)
    answer = example.answers[0]
    assert (features[0].start_position, features[0].end_position) == (features[0].cls_index,) * 2
    gold = features[1]
    assert _window_text(gold, gold.start_position, gold.end_position) == answer
    # Window 0 only sees the answer's beginning (a partial span); window 1 sees all of it.
    partial_start = next(k for k, o in enumerate(features[0].offsets) if o is not None and o[0] == gold.offsets[gold.start_position][0])
    partial_end = _context_span(features[0])[1]

    def logits(partial_score: float):
        starts = [torch.zeros(len(f.input_ids)) for f in features]
        ends = [torch.zeros(len(f.input_ids)) for f in features]
        starts[0][partial_start] = ends[0][partial_end] = partial_score
        starts[1][gold.start_position] = ends[1][gold.end_position] = 10.0
        return starts, ends

    assert decode_answers(features, *logits(5.0)) == {"x1": answer}
    partial = LONG_CONTEXT[features[0].offsets[partial_start][0]:features[0].offsets[partial_end][1]]
    assert partial != answer and answer.startswith(partial)
    assert decode_answers(features, *logits(20.0)) == {"x1": partial}  # windows are really compared
    assert score(QA, {"x1": answer}, [example]) == {"exact_match": 100.0, "f1": 100.0}


def test_decoding_respects_the_maximum_answer_length(tokenizer):
    example = SpanQAExample("long", "what", LONG_CONTEXT, (), ())
    features = encode(QA, [example], tokenizer, max_length=128)
    assert len(features) == 1
    feature = features[0]
    first, last = _context_span(feature)
    assert last - first + 1 > 30
    starts, ends = torch.zeros(len(feature.input_ids)), torch.zeros(len(feature.input_ids))
    starts[first], ends[last] = 10.0, 10.0  # the best pair is too long ...
    ends[first + 2] = 5.0  # ... so the best allowed one wins
    assert decode_answers(features, [starts], [ends]) == {"long": _window_text(feature, first, first + 2)}
    assert decode_answers(features, [starts], [ends], max_answer_length=200) == {"long": LONG_CONTEXT}


def test_unanswerable_question(tokenizer):
    example = SpanQAExample("none", "who flies", "the dog sees the cat", (), ())
    features = encode(QA, [example], tokenizer)
    assert all(f.start_position == f.end_position == f.cls_index == 0 for f in features)
    starts = [torch.full((len(f.input_ids),), -1.0) for f in features]
    ends = [torch.full((len(f.input_ids),), -1.0) for f in features]
    for s, e in zip(starts, ends):
        s[0] = e[0] = 5.0  # the model prefers "no answer"
    assert decode_answers(features, starts, ends, allow_no_answer=True) == {"none": ""}
    assert decode_answers(features, starts, ends)["none"] != ""  # SQuAD v1.1: always answer
    assert score(QA, {"none": ""}, [example])["exact_match"] == 100.0
    assert score(QA, {"none": "the dog"}, [example]) == {"exact_match": 0.0, "f1": 0.0}


def test_qa_scores_use_mlqa_normalisation_only_for_mlqa():
    example = SpanQAExample("m", "was", "der Hund schläft", ("Hund",), (4,))
    # MLQA's normalisation is a field of the task definition (the registered MLQA sets it), not its name.
    mlqa = TaskSpec("mlqa", "span_qa", ("en", "de"), (), "f1", loader=_no_data, answer_normalization="mlqa")
    from xstilts.tasks import get_task

    assert get_task("mlqa").answer_normalization == "mlqa" and get_task("xquad").answer_normalization == "squad"
    assert score(mlqa, {"m": "der Hund"}, [example], language="de")["exact_match"] == 100.0
    assert score(mlqa, {"m": "der Hund"}, [example], language="en")["exact_match"] == 0.0
    assert score(QA, {"m": "der Hund"}, [example], language="de") == {"exact_match": 0.0, "f1": pytest.approx(200 / 3)}
    assert score(QA, {}, [example]) == {"exact_match": 0.0, "f1": 0.0}  # not predicted: 0
    with pytest.raises(ValueError, match="no rules"):
        score(mlqa, {"m": "x"}, [example], language="far")


def _qa_examples() -> list[SpanQAExample]:
    people = ["Maria", "Ahmed", "Kenji", "Olga", "Pedro", "Amara"]
    places = ["Lagos", "Kyoto", "Lima", "Oslo", "Cairo", "Quito"]
    examples = []
    for i, (person, place) in enumerate(zip(people, places)):
        context = f"{person} visits the garden in {place} with the old teacher"
        question, answer = ("who visits the garden", person) if i % 2 else ("where is the garden", place)
        examples.append(SpanQAExample(f"id{i}", question, context, (answer,), (context.index(answer),)))
    return examples


def test_qa_trains_predicts_and_scores(tokenizer, encoder_dir):
    examples = _qa_examples()
    model = load_model_for_task(QA, encoder_dir)
    assert model.config.num_labels == 2
    features = encode(QA, examples, tokenizer)
    assert len(features) == len(examples)  # short contexts: one window each
    losses = _train(model, features, tokenizer.pad_token_id, steps=30, batch_size=3)
    assert _mean(losses[-4:]) < 0.5 * _mean(losses[:4])
    predictions = predict(QA, model, features, tokenizer.pad_token_id)
    assert set(predictions) == {e.id for e in examples}
    assert all(p in e.context for p, e in zip(predictions.values(), examples))
    scores = evaluate(QA, model, tokenizer, examples)
    assert set(scores) == {"exact_match", "f1"} and QA.metric in scores
    assert scores == score(QA, predictions, examples)
    assert scores["f1"] >= 50.0  # it fits its 6 training examples
    assert evaluate(QA, model, tokenizer, examples, features=features) == scores
    assert majority_baseline(QA, examples, examples)["f1"] < 20.0


def test_qa_refuses_duplicate_ids(tokenizer):
    example = SpanQAExample("same", "who", "the dog", (), ())
    with pytest.raises(ValueError, match="unique"):
        encode(QA, [example, example], tokenizer)


# ---------------------------------------------------------------------------------------------
# Classification and tagging keep their shape
# ---------------------------------------------------------------------------------------------

def test_classification_and_tagging_features_are_unchanged(tokenizer):
    from xstilts.tasks import get_task

    xnli, panx = get_task("synthetic_xnli"), get_task("synthetic_panx")
    examples = xnli.load("dev", "en")[:5]
    features = encode(xnli, examples, tokenizer)
    assert all(type(f) is Features and isinstance(f.labels, int) for f in features)
    batch = collate(features, tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["labels"].shape == (5,)
    assert features[0].input_ids == tokenizer(examples[0].text_a, examples[0].text_b, truncation=True, max_length=64)["input_ids"]
    tags = encode(panx, panx.load("dev", "en")[:3], tokenizer)
    batch = collate(tags, tokenizer.pad_token_id)
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    order = batches_by_length(features, 2)
    assert sorted(i for b in order for i in b) == list(range(5))


def test_a_word_whose_first_piece_is_a_bare_word_start_is_labelled_on_its_next_piece(tokenizer):
    """XLM-R-style SentencePiece splits many (Chinese, Japanese) words into a bare "▁" + the rest;
    the tag then goes on the first piece that is not the bare marker, one labelled piece per word."""
    from xstilts.tasks import get_task
    from xstilts.tasks.base import TaggingExample
    from xstilts.tasks.modeling import bare_word_start_id, word_label_positions

    bare = bare_word_start_id(tokenizer)
    assert bare is not None and tokenizer.convert_ids_to_tokens(bare) == "\u2581"
    # Hand-made ids: word 0 = [bare, 7], word 1 = [9], word 2 = [bare] only, word 3 = [bare, bare, 5, 6].
    words = [None, 0, 0, 1, 2, 3, 3, 3, 3, None]
    ids = [0, bare, 7, 9, bare, bare, bare, 5, 6, 2]
    assert word_label_positions(words, ids, bare) == {0: 2, 1: 3, 2: 4, 3: 7}
    assert word_label_positions(words, ids, None) == {0: 1, 1: 3, 2: 4, 3: 5}  # WordPiece: the first piece

    panx = get_task("synthetic_panx")
    tokens = ("zxqv", "Q", "kk")  # the tiny tokenizer splits each into "▁" + letters
    pieces = [tokenizer.convert_ids_to_tokens(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in tokens]
    assert all(p[0] == "\u2581" and len(p) > 1 for p in pieces), pieces
    example = TaggingExample(tokens=tokens, tags=(panx.labels[1], panx.labels[0], panx.labels[2]))
    feature = encode(panx, [example], tokenizer)[0]
    labelled = [(tokenizer.convert_ids_to_tokens(i), label) for i, label in zip(feature.input_ids, feature.labels) if label != -100]
    assert [label for _, label in labelled] == [1, 0, 2]  # one per word, in order
    assert all(piece != "\u2581" for piece, _ in labelled)
