"""The heads and retrieval on a BERT-architecture encoder, not only XLM-R (issue 8: the study must
take multilingual-e5-small, a BertModel with the XLM-R tokenizer, like any HF model path).

A tiny BertConfig model (2 layers, hidden 32) is built here with the tiny XLM-R tokenizer of
tests/conftest.py, and trained a few steps through the train loop's generic path for every
trainable kind, scored with the shared metrics (as tests/test_heads.py does for XLM-R). Segment
ids: the XLM-R tokenizer produces none (the model then uses segment 0, as multilingual-e5 was
trained); a BERT-style variant of the tokenizer (segment 1 for the second sequence) checks that
segment ids, when a tokenizer makes them, reach the model in training and prediction.

The last test loads the real multilingual-e5-small folder (XSTILTS_ME5_PATH, default
/work/models/me5-small, built by xstilts build-model me5-small) and is skipped without it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from xstilts.tasks.base import MultipleChoiceExample, PairExample, RetrievalCorpus, SpanQAExample, TaskSpec

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from xstilts.tasks.modeling import (MultipleChoiceFeatures, QAFeatures, batches_by_length, collate, encode,  # noqa: E402
                            evaluate, freeze_embeddings, load_model_for_task, max_positions, predict, score,
                            usable_length)
from xstilts.tasks.retrieval import embed_sentences, evaluate_corpus, load_encoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # one_thread, tokenizer_dir, tokenizer: tests/conftest.py

ME5_PATH = Path(os.environ.get("XSTILTS_ME5_PATH", "/work/models/me5-small"))


def _no_data(split, language, options):
    return []


def _bert_config(tokenizer, **changes):
    from transformers import BertConfig

    settings = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=128, type_vocab_size=2,
                    pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tokenizer):
    """A bare tiny BERT encoder folder with the XLM-R tokenizer: multilingual-e5's shape, in small."""
    from transformers import BertModel

    torch.manual_seed(0)
    model = BertModel(_bert_config(tokenizer))
    with torch.no_grad():  # make segment 1 clearly different from segment 0
        model.embeddings.token_type_embeddings.weight[1].normal_(0.0, 1.0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def segment_tokenizer(tokenizer_dir):
    """The tiny tokenizer made BERT-style: it returns token_type_ids, 1 for the second sequence."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    segmenting = AutoTokenizer.from_pretrained(tokenizer_dir, model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    segmenting.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", pair="<s>:0 $A:0 </s>:0 </s>:1 $B:1 </s>:1",
        special_tokens=[("<s>", segmenting.cls_token_id), ("</s>", segmenting.sep_token_id)])
    return segmenting


def _train(model, features, pad_token_id, steps: int, batch_size: int = 4, lr: float = 3e-3) -> list[float]:
    """The train loop's generic path: model(**collate(...)).loss, nothing model-specific."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
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


# ---------------------------------------------------------------------------------------------
# Every trainable kind on BERT
# ---------------------------------------------------------------------------------------------

def test_classification_trains_on_bert(tokenizer, bert_dir):
    from xstilts.tasks import get_task
    from transformers import BertForSequenceClassification

    xnli = get_task("synthetic_xnli")
    examples = xnli.load("train", "en")[:8]  # fits 8 examples: the loss must fall
    model = load_model_for_task(xnli, bert_dir)
    assert isinstance(model, BertForSequenceClassification) and type(model.base_model).__name__ == "BertModel"
    assert model.config.id2label == dict(enumerate(xnli.labels))
    features = encode(xnli, examples, tokenizer)
    assert all(f.token_type_ids is None for f in features)  # the XLM-R tokenizer makes no segment ids
    assert set(collate(features[:2], tokenizer.pad_token_id)) == {"input_ids", "attention_mask", "labels"}
    losses = _train(model, features, tokenizer.pad_token_id, steps=40)
    assert _mean(losses[-4:]) < 0.7 * _mean(losses[:4])
    predictions = predict(xnli, model, features, tokenizer.pad_token_id)
    assert set(predictions) <= set(xnli.labels)
    assert evaluate(xnli, model, tokenizer, examples) == score(xnli, predictions, examples)


def test_tagging_trains_on_bert(tokenizer, bert_dir):
    from xstilts.tasks import get_task

    panx = get_task("synthetic_panx")
    examples = panx.load("train", "en")[:12]
    model = load_model_for_task(panx, bert_dir)
    features = encode(panx, examples, tokenizer)
    losses = _train(model, features, tokenizer.pad_token_id, steps=24)
    assert _mean(losses[-4:]) < 0.7 * _mean(losses[:4])
    predictions = predict(panx, model, features, tokenizer.pad_token_id)
    assert [len(p) for p in predictions] == [len(e.tags) for e in examples]
    assert set(score(panx, predictions, examples)) == {"f1", "precision", "recall"}


def test_multiple_choice_trains_on_bert(tokenizer, bert_dir):
    mc = TaskSpec("toy_mc", "multiple_choice", ("en",), ("0", "1"), "accuracy", loader=_no_data, max_length=32)
    bright, dark = "happy bright big green".split(), "dark quiet small old".split()
    examples = [MultipleChoiceExample(f"the child sees the {noun}", (bright[i % 4], dark[i % 4])[::1 - 2 * (i % 2)], i % 2)
                for i, noun in enumerate("dog cat house river book car tree city".split())]
    model = load_model_for_task(mc, bert_dir)
    features = encode(mc, examples, tokenizer)
    losses = _train(model, features, tokenizer.pad_token_id, steps=30)
    assert _mean(losses[-4:]) < 0.7 * _mean(losses[:4])
    assert evaluate(mc, model, tokenizer, examples)["accuracy"] >= 75.0


def _qa_examples() -> list[SpanQAExample]:
    people, places = ["Maria", "Ahmed", "Kenji", "Olga", "Pedro", "Amara"], ["Lagos", "Kyoto", "Lima", "Oslo", "Cairo", "Quito"]
    examples = []
    for i, (person, place) in enumerate(zip(people, places)):
        context = f"{person} visits the garden in {place} with the old teacher"
        question, answer = ("who visits the garden", person) if i % 2 else ("where is the garden", place)
        examples.append(SpanQAExample(f"id{i}", question, context, (answer,), (context.index(answer),)))
    return examples


def test_span_qa_trains_on_bert(tokenizer, bert_dir):
    qa = TaskSpec("toy_qa", "span_qa", ("en",), (), "f1", loader=_no_data, max_length=32)
    examples = _qa_examples()
    model = load_model_for_task(qa, bert_dir)
    features = encode(qa, examples, tokenizer)
    losses = _train(model, features, tokenizer.pad_token_id, steps=30, batch_size=3)
    assert _mean(losses[-4:]) < 0.5 * _mean(losses[:4])
    scores = evaluate(qa, model, tokenizer, examples)
    assert set(scores) == {"exact_match", "f1"} and scores["f1"] >= 50.0


# ---------------------------------------------------------------------------------------------
# Segment ids: kept exactly when the tokenizer makes them
# ---------------------------------------------------------------------------------------------

def test_segment_ids_reach_the_model_when_the_tokenizer_makes_them(tokenizer, segment_tokenizer, bert_dir):
    from xstilts.tasks import get_task

    xnli = get_task("synthetic_xnli")
    examples = xnli.load("dev", "en")[:6]
    features = encode(xnli, examples, segment_tokenizer)
    expected = segment_tokenizer(examples[0].text_a, examples[0].text_b)
    assert features[0].input_ids == expected["input_ids"] and features[0].token_type_ids == expected["token_type_ids"]
    assert 1 in features[0].token_type_ids and features[0].token_type_ids[0] == 0
    batch = collate(features, segment_tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert (batch["token_type_ids"][batch["attention_mask"] == 0] == 0).all()  # padded with segment 0

    model = load_model_for_task(xnli, bert_dir).eval()
    with torch.no_grad():
        with_segments = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        without = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(with_segments, without)  # segment 1 is a different embedding ...
    predicted = predict(xnli, model, features, segment_tokenizer.pad_token_id)
    assert predicted == [xnli.labels[int(i)] for i in with_segments.argmax(-1)]  # ... and predict passes it
    # the XLM-R tokenizer: no segment ids, and the model's default is segment 0 everywhere
    plain = collate(encode(xnli, examples, tokenizer), tokenizer.pad_token_id)
    with torch.no_grad():
        default = model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]).logits
        zeros = model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"],
                      token_type_ids=torch.zeros_like(plain["input_ids"])).logits
    assert torch.equal(default, zeros)


def test_segment_ids_for_multiple_choice_and_qa_windows(segment_tokenizer, bert_dir):
    mc = TaskSpec("toy_mc", "multiple_choice", ("en",), ("0", "1"), "accuracy", loader=_no_data, max_length=32)
    examples = [MultipleChoiceExample("the dog", ("red", "big old green"), 1),
                MultipleChoiceExample("the happy child sees the bird", ("yes", "no"), 0, question="why?")]
    features = encode(mc, examples, segment_tokenizer)
    assert all(isinstance(f, MultipleChoiceFeatures) and len(f.token_type_ids) == 2 for f in features)
    assert features[1].token_type_ids[1] == segment_tokenizer("the happy child sees the bird why?", "no")["token_type_ids"]
    batch = collate(features, segment_tokenizer.pad_token_id)
    assert batch["token_type_ids"].shape == batch["input_ids"].shape == (2, 2, batch["input_ids"].shape[-1])
    model = load_model_for_task(mc, bert_dir)
    assert model(**batch).loss.isfinite()

    qa = TaskSpec("toy_qa", "span_qa", ("en",), (), "f1", loader=_no_data, max_length=32)
    context = " ".join(["Maria sees the big dog in Lagos with the red book"] * 4)
    windows = encode(qa, [SpanQAExample("q", "who sees the dog", context, ("Maria",), (0,))], segment_tokenizer,
                     doc_stride=8)
    assert len(windows) > 1 and all(isinstance(w, QAFeatures) for w in windows)
    for window in windows:  # the question is segment 0, the context window segment 1
        assert len(window.token_type_ids) == len(window.input_ids)
        assert all(t == 1 for t, o in zip(window.token_type_ids, window.offsets) if o is not None)
        assert window.token_type_ids[:3] == [0, 0, 0]
    batch = collate(windows, segment_tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    assert load_model_for_task(qa, bert_dir)(**batch).loss.isfinite()


# ---------------------------------------------------------------------------------------------
# Positions, padding, retrieval, the phase-2 encoder
# ---------------------------------------------------------------------------------------------

def test_position_limits(tokenizer):
    from transformers import BertConfig, XLMRobertaConfig

    assert max_positions(BertConfig(max_position_embeddings=512)) == 512  # BERT counts from 0
    assert max_positions(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512  # from pad + 1
    assert max_positions(None) is None
    assert tokenizer.model_max_length == 128
    assert usable_length(tokenizer, 512) == 128 and usable_length(tokenizer, 64) == 64
    xnli = TaskSpec("toy_xnli", "classification", ("en",), ("a", "b"), "accuracy", loader=_no_data)
    long = PairExample(" ".join(["the dog sees the cat"] * 60), None, "a")
    assert len(encode(xnli, [long], tokenizer, max_length=512)[0].input_ids) == 128  # capped at the tokenizer's limit


def test_predict_refuses_features_longer_than_the_position_table(tokenizer, tmp_path):
    from transformers import BertForSequenceClassification

    xnli = TaskSpec("toy_xnli", "classification", ("en",), ("a", "b"), "accuracy", loader=_no_data)
    model = BertForSequenceClassification(_bert_config(tokenizer, max_position_embeddings=8, num_labels=2))
    features = encode(xnli, [PairExample("the dog sees the happy cat in the big garden", None, "a")], tokenizer)
    with pytest.raises(ValueError, match="holds 8 positions; encode with a smaller max_length"):
        predict(xnli, model, features, tokenizer.pad_token_id)


def test_collate_pads_with_zero_when_the_tokenizer_has_no_pad_token(tokenizer):
    xnli = TaskSpec("toy_xnli", "classification", ("en",), ("a", "b"), "accuracy", loader=_no_data)
    features = encode(xnli, [PairExample("the dog", None, "a"), PairExample("the happy dog sees the cat", None, "b")], tokenizer)
    batch = collate(features, None)
    assert batch["input_ids"][0, len(features[0].input_ids):].eq(0).all()
    assert batch["attention_mask"][0].sum() == len(features[0].input_ids)


def test_phase2_encoder_of_a_bert_head_reloads_for_retrieval_and_a_new_head(tokenizer, bert_dir, tmp_path):
    """What the train loop does at the end of phase 2 (`base_model.save_pretrained`), then what a
    retrieval target and phase 3 do with that folder."""
    from xstilts.tasks import get_task
    from transformers import BertForTokenClassification, BertModel

    model = load_model_for_task(get_task("synthetic_xnli"), bert_dir)
    model.base_model.save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    encoder = load_encoder(str(tmp_path / "encoder"))
    assert isinstance(encoder, BertModel)
    for name, tensor in model.base_model.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name
    assert isinstance(load_model_for_task(get_task("synthetic_panx"), str(tmp_path / "encoder")), BertForTokenClassification)


def test_retrieval_pooling_on_bert(tokenizer, bert_dir):
    encoder = load_encoder(bert_dir)
    sentences = ["the dog sees the cat", "Maria Silva visits the big garden in Lagos", "a small red boat"]
    pooled = embed_sentences(encoder, tokenizer, sentences, layer=1, batch_size=2)
    for row, sentence in enumerate(sentences):  # batched with padding == alone, mean over all tokens
        ids = torch.tensor([tokenizer(sentence)["input_ids"]])
        with torch.no_grad():
            alone = encoder(input_ids=ids, output_hidden_states=True).hidden_states[1][0].mean(0)
        assert torch.allclose(pooled[row], alone, atol=1e-5)
    ids = tuple(str(i) for i in range(3))
    corpus = RetrievalCorpus(ids, tuple(sentences), ids, tuple(sentences), tuple(zip(ids, ids)))
    tatoeba = TaskSpec("toy_tatoeba", "retrieval", ("xx",), (), "accuracy", loader=lambda *a: [corpus])
    assert evaluate_corpus(tatoeba, corpus, encoder, tokenizer) == {"accuracy": 100.0}


# ---------------------------------------------------------------------------------------------
# Freezing the word embeddings
# ---------------------------------------------------------------------------------------------

def test_freeze_embeddings_keeps_the_word_embeddings_and_trains_the_rest(tokenizer, bert_dir):
    from xstilts.tasks import get_task

    xnli = get_task("synthetic_xnli")
    model = load_model_for_task(xnli, bert_dir)
    frozen = freeze_embeddings(model)
    assert frozen == len(tokenizer) * 32 == model.get_input_embeddings().weight.numel()
    assert freeze_embeddings(model) == frozen  # idempotent
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "bert.embeddings.word_embeddings.weight" not in trainable
    assert {"bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight",
            "bert.embeddings.LayerNorm.weight", "classifier.weight"} <= trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    features = encode(xnli, xnli.load("train", "en")[:8], tokenizer)
    # the train loop's optimizer takes every parameter: a frozen one gets no gradient, so no update
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    model(**collate(features, tokenizer.pad_token_id)).loss.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert model.get_input_embeddings().weight.grad is None
    assert torch.equal(after["bert.embeddings.word_embeddings.weight"], before["bert.embeddings.word_embeddings.weight"])
    for name in ("bert.embeddings.position_embeddings.weight", "bert.embeddings.LayerNorm.weight",
                 "bert.encoder.layer.0.attention.self.query.weight", "classifier.weight"):
        assert not torch.equal(after[name], before[name]), name


def test_freeze_embeddings_on_wrapped_models(tokenizer, bert_dir):
    from xstilts.tasks import get_task

    class Wrapper(torch.nn.Module):  # like DDP (.module) or the multi-task model (heads inside)
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    inner = load_model_for_task(get_task("synthetic_xnli"), bert_dir)
    assert freeze_embeddings(Wrapper(inner)) == inner.get_input_embeddings().weight.numel()
    assert not inner.get_input_embeddings().weight.requires_grad
    holder = torch.nn.ModuleDict({"xnli": load_model_for_task(get_task("synthetic_xnli"), bert_dir)})
    assert freeze_embeddings(holder) > 0 and not holder["xnli"].get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match="no input word-embedding matrix"):
        freeze_embeddings(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------
# The real multilingual-e5-small folder (skipped unless built)
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(not (ME5_PATH / "config.json").exists(),
                    reason=f"no multilingual-e5-small folder at {ME5_PATH} (build it with "
                           "xstilts build-model me5-small, or set XSTILTS_ME5_PATH)")
def test_real_me5_small_classification_and_retrieval():
    from xstilts.tasks import get_task
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(ME5_PATH)
    xnli = get_task("xnli")
    torch.manual_seed(0)
    model = load_model_for_task(xnli, str(ME5_PATH)).eval()
    assert isinstance(model, BertForSequenceClassification) and model.config.type_vocab_size == 2
    assert max_positions(model.config) == 512 == tokenizer.model_max_length
    examples = [PairExample("The cat sits on the mat.", "An animal is on the mat.", "entailment"),
                PairExample("Die Katze schläft auf dem Sofa, weil sie müde ist.", "Ein Hund bellt.", "contradiction")]
    features = encode(xnli, examples, tokenizer, max_length=64)
    # the XLM-R pair format <s> A </s></s> B </s>, no segment ids: the model uses segment 0 throughout,
    # which is what multilingual-e5 was trained with
    assert features[0].input_ids == tokenizer(examples[0].text_a, examples[0].text_b)["input_ids"]
    assert all(f.token_type_ids is None for f in features)
    batch = collate(features, tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    with torch.no_grad():
        ours = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        hf = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], padding=True, return_tensors="pt")
        expected = model(**hf, token_type_ids=torch.zeros_like(hf["input_ids"])).logits
    assert ours.shape == (2, 3) and torch.isfinite(ours).all()
    assert torch.allclose(ours, expected, atol=1e-5)
    assert predict(xnli, model, features, tokenizer.pad_token_id) == [xnli.labels[int(i)] for i in ours.argmax(-1)]
    assert freeze_embeddings(model) == 250037 * 384

    # a real multilingual encoder: a translation is nearer than an unrelated sentence
    encoder = load_encoder(str(ME5_PATH))
    vectors = embed_sentences(encoder, tokenizer, ["The cat sleeps on the sofa.", "Die Katze schläft auf dem Sofa.",
                                                   "Stock markets fell sharply on Monday."], layer=-1)
    vectors = torch.nn.functional.normalize(vectors, dim=-1)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
