"""Sentence retrieval (BUCC 2018, Tatoeba, LAReQA, Mewsli-X) with an encoder's pooled hidden
states: no training.

As in XTREME, a sentence's embedding is the mean of one layer's hidden states over its non-pad
tokens (the special tokens <s> and </s> included, XTREME's default), and sentences are compared
by cosine similarity.

Layers are numbered as HF's `output_hidden_states` tuple: 0 is the embedding output, k (1 to
num_hidden_layers) the output of transformer layer k. XTREME's `--specific_layer` counts the
transformer layers from 0 with the embeddings left out, so its value is one less than ours:
its 7 for 12-layer mBERT is our 8, its 13 for 24-layer XLM-R large (Tatoeba) is our 14.
`default_layer` reproduces both: num_hidden_layers // 2 + 2, capped at the last layer (for the
2-layer tiny models: the last one). A negative layer counts from the end (-1: the last).

Tatoeba: each source sentence's nearest English sentence (source -> English, LASER's xx->en
direction; XTREME's run_retrieval.py searches the other way, English -> source) is compared
with the gold pair: `accuracy` in percent.

BUCC: each source sentence's best English candidate and its cosine score (XTREME mines with a
ratio margin over 4 nearest neighbours in both directions; plain cosine here). Pairs scoring at
least a threshold are predicted. The threshold is chosen on the given data to maximise F1
against its gold pairs, which is what XTREME does on BUCC's dev (sample) split, before applying
that threshold to test: pass `threshold=` to use one chosen elsewhere. On the data it was chosen
on the F1 is therefore an optimistic (upper) estimate. Scores: the shared `bucc_prf`.

LAReQA and Mewsli-X (XTREME-R): mean average precision at 20, `map_at_20` in percent (XTREME-R's
"mAP@20"; the name has no "@" because MLflow refuses it in metric keys). Each query (a LAReQA
question; a Mewsli-X mention in its sentence) ranks every candidate (LAReQA: every answer
sentence of every language's file, so the pool is multilingual; Mewsli-X: every entity
description) by cosine similarity, and scores XTREME-R's AP@k (its utils_lareqa
average_precision_at_k, which Mewsli-X's MRR@20 equals with one relevant entity):

    AP@k = sum over ranks i <= k holding a relevant candidate of (relevant in the top i) / i,
           divided by min(number of relevant candidates, k)

relevant = the query's gold pairs (LAReQA: the sentences answering that question in every
language, its own included). The score of a language is the mean over its queries, x 100;
queries without any gold pair are not scored. Ties: candidates with equal similarity keep the
pool's order (the earlier one ranks higher), so scores are deterministic; XTREME-R sorts with
numpy's unstable argsort, i.e. leaves tie order unspecified. Fewer than k candidates: all are
ranked and the divisor is still min(relevant, k). Unlike XTREME-R's fine-tuned dual encoders,
which encode a LAReQA answer together with its paragraph, a candidate here is its sentence alone
(mean-pooled like every other sentence).
"""
from __future__ import annotations

import math

import torch

from xstilts.tasks.base import DataOptions, RetrievalCorpus, TaskDataError, TaskSpec
from xstilts.tasks.kinds import kind_of
from xstilts.tasks.metrics import accuracy, bucc_prf

BUCC_METRIC = "f1"  # a retrieval task whose metric is f1 is mined BUCC-style ...
TATOEBA_METRIC = "accuracy"  # ... one whose metric is accuracy is searched Tatoeba-style ...
MAP_K = 20
MAP_METRIC = f"map_at_{MAP_K}"  # ... and one whose metric is map_at_20 is ranked LAReQA/Mewsli-X-style


def default_layer(num_hidden_layers: int) -> int:
    """XTREME's choice, in `hidden_states` numbering: 8 of 12 layers, 14 of 24 (see the module doc)."""
    return min(num_hidden_layers, num_hidden_layers // 2 + 2)


def resolve_layer(num_hidden_layers: int, layer: int | None = None) -> int:
    """The `hidden_states` index to pool: `layer`, the default when None, negatives from the end."""
    if layer is None:
        return default_layer(num_hidden_layers)
    index = layer + num_hidden_layers + 1 if layer < 0 else layer
    if not 0 <= index <= num_hidden_layers:
        raise ValueError(f"layer {layer} does not exist: the encoder has hidden states 0 (embeddings) "
                         f"to {num_hidden_layers} (or -1 to -{num_hidden_layers + 1} from the end)")
    return index


def load_encoder(path: str):
    """The bare encoder (no head) of a folder or hub name: a phase-2 encoder, an MLM, a fine-tuned model.

    AutoModel picks the class from the config (XLMRobertaModel, BertModel, ...) and drops any
    head. Only hidden states are read, so a missing BERT pooler (multilingual-e5 ships none)
    does not matter; its random initialisation is the only thing HF warns about.
    """
    from transformers import AutoModel

    return AutoModel.from_pretrained(path)


@torch.no_grad()
def embed_sentences(model, tokenizer, sentences, layer: int | None = None, batch_size: int = 64,
                    max_length: int = 128, device: str | torch.device = "cpu") -> torch.Tensor:
    """[len(sentences), hidden] float32: hidden_states[layer] mean-pooled over non-pad tokens.

    Batches hold sentences of similar length (sorted), padded to their longest; the rows come
    back in the order of `sentences`.
    """
    sentences = list(sentences)
    index = resolve_layer(model.config.num_hidden_layers, layer)
    out = torch.zeros((len(sentences), model.config.hidden_size), dtype=torch.float32)
    if not sentences:
        return out
    model.eval()
    from xstilts.tasks.modeling import usable_length  # imported here: xstilts.tasks.modeling loads transformers

    # Single sentences: segment 0 everywhere, which is also what every encoder fills in when
    # token_type_ids are left out, so none are passed (see xstilts.tasks.modeling.wants_segment_ids).
    encoded = tokenizer(sentences, truncation=True, max_length=usable_length(tokenizer, max_length))["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out either way
    for begin in range(0, len(order), batch_size):
        rows = order[begin:begin + batch_size]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            input_ids[r, :len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
            mask[r, :len(encoded[i])] = 1
        output = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        states = output.hidden_states[index].float()
        weights = mask.to(states.device).unsqueeze(-1).float()
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        out[rows] = pooled.cpu()
    return out


def nearest(source: torch.Tensor, target: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each source row its most cosine-similar target row: (scores, indices), in chunks so
    that a BUCC-sized similarity matrix is never held whole."""
    if len(target) == 0:
        raise ValueError("no target (English) sentences to search")
    src = torch.nn.functional.normalize(source.float(), dim=-1)
    tgt = torch.nn.functional.normalize(target.float(), dim=-1)
    scores, indices = [], []
    for begin in range(0, len(src), chunk):
        best = (src[begin:begin + chunk] @ tgt.T).max(dim=1)
        scores.append(best.values)
        indices.append(best.indices)
    if not scores:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


# ---------------------------------------------------------------------------------------------
# Tatoeba
# ---------------------------------------------------------------------------------------------

def tatoeba_predictions(corpus: RetrievalCorpus, source_embeddings: torch.Tensor,
                        target_embeddings: torch.Tensor) -> dict[str, str]:
    """{source id: id of its nearest English sentence}."""
    _, indices = nearest(source_embeddings, target_embeddings)
    return {sid: corpus.target_ids[int(j)] for sid, j in zip(corpus.source_ids, indices)}


def tatoeba_scores(corpus: RetrievalCorpus, source_embeddings: torch.Tensor,
                   target_embeddings: torch.Tensor) -> dict[str, float]:
    """{"accuracy": % of gold (source, English) pairs whose source finds that English sentence}."""
    predicted = tatoeba_predictions(corpus, source_embeddings, target_embeddings)
    return {"accuracy": accuracy([predicted[s] for s, _ in corpus.gold], [t for _, t in corpus.gold])}


# ---------------------------------------------------------------------------------------------
# BUCC
# ---------------------------------------------------------------------------------------------

def bucc_candidates(corpus: RetrievalCorpus, source_embeddings: torch.Tensor,
                    target_embeddings: torch.Tensor) -> list[tuple[str, str, float]]:
    """(source id, its best English id, cosine score) for every source sentence."""
    scores, indices = nearest(source_embeddings, target_embeddings)
    return [(sid, corpus.target_ids[int(j)], float(s)) for sid, j, s in zip(corpus.source_ids, indices, scores)]


def optimal_threshold(candidates: list[tuple[str, str, float]], gold) -> float:
    """The score threshold (predict pairs scoring >= it) that maximises F1 against `gold`.

    Candidates are cut only between different scores (equal scores are kept or dropped
    together); the threshold is the midpoint between the last kept and the first dropped score
    (as XTREME's bucc_optimize), or the last kept score when nothing is dropped. Among equally
    good cuts the highest threshold wins. When no candidate is a gold pair, the threshold is just
    above the best score (nothing predicted); with no candidates it is +inf.
    """
    gold = {tuple(g) for g in gold}
    ranked = sorted(candidates, key=lambda c: -c[2])
    if not ranked:
        return math.inf
    best_f1, threshold = 0.0, math.nextafter(ranked[0][2], math.inf)
    extracted = correct = 0
    for k, (source, target, value) in enumerate(ranked):
        extracted += 1
        correct += (source, target) in gold
        if k + 1 < len(ranked) and ranked[k + 1][2] == value:
            continue  # not a cut point: the next candidate has the same score
        if correct:
            f1 = 2 * correct / (extracted + len(gold))
            if f1 > best_f1:
                best_f1 = f1
                threshold = (value + ranked[k + 1][2]) / 2 if k + 1 < len(ranked) else value
    return threshold


def bucc_scores(candidates: list[tuple[str, str, float]], gold, threshold: float | None = None) -> dict[str, float]:
    """precision/recall/f1 (shared `bucc_prf`) of the candidates scoring >= `threshold`, and the
    threshold itself; None: the F1-optimal threshold on these candidates (see the module doc)."""
    gold = [tuple(g) for g in gold]
    if threshold is None:
        threshold = optimal_threshold(candidates, gold)
    predicted = [(s, t) for s, t, value in candidates if value >= threshold]
    return {**bucc_prf(predicted, gold), "threshold": threshold}


# ---------------------------------------------------------------------------------------------
# LAReQA, Mewsli-X: mean average precision at 20
# ---------------------------------------------------------------------------------------------

def average_precision_at_k(relevant: set, ranked: list, k: int = MAP_K) -> float:
    """XTREME-R's AP@k (0-1) of one ranked candidate list against the set of relevant candidates:
    the precision at each of the first k ranks that holds a relevant candidate (counted once),
    summed and divided by min(|relevant|, k). No relevant candidate: 0."""
    if not relevant:
        return 0.0
    hits, total, seen = 0, 0.0, set()
    for rank, candidate in enumerate(ranked[:k], start=1):
        if candidate in relevant and candidate not in seen:
            seen.add(candidate)
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k)


def top_k(source: torch.Tensor, target: torch.Tensor, k: int = MAP_K, budget: int = 1 << 24) -> list[list[int]]:
    """For each source row, the indices of its k most cosine-similar target rows, best first;
    equal similarities in target order (see the module doc). Similarities are computed in
    chunks of at most `budget` entries, so a Mewsli-X-sized candidate set is never held whole."""
    if len(target) == 0:
        raise ValueError("no candidates to rank")
    k = min(k, len(target))
    src = torch.nn.functional.normalize(source.float(), dim=-1)
    tgt = torch.nn.functional.normalize(target.float(), dim=-1)
    chunk = max(1, budget // len(tgt))
    ranked: list[list[int]] = []
    for begin in range(0, len(src), chunk):
        scores = src[begin:begin + chunk] @ tgt.T
        kth = scores.topk(k, dim=1).values[:, -1:]  # the k-th best score of each row
        for row, cut in zip(scores, kth):
            # Everything scoring at least the k-th best, sorted stably (ties keep target order).
            candidates = torch.nonzero(row >= cut, as_tuple=True)[0]
            order = torch.sort(row[candidates], descending=True, stable=True).indices
            ranked.append(candidates[order][:k].tolist())
    return ranked


def map_scores(corpus: RetrievalCorpus, source_embeddings: torch.Tensor, target_embeddings: torch.Tensor,
               k: int = MAP_K) -> dict[str, float]:
    """{"map_at_<k>": mean over the queries with gold pairs of AP@k, in percent}."""
    relevant: dict[str, set[int]] = {}
    position = {tid: j for j, tid in enumerate(corpus.target_ids)}
    for source, target in corpus.gold:
        relevant.setdefault(source, set()).add(position[target])
    rows = [i for i, sid in enumerate(corpus.source_ids) if sid in relevant]
    name = f"map_at_{k}"
    if not rows:
        return {name: 0.0}
    ranked = top_k(source_embeddings[rows], target_embeddings, k)
    aps = [average_precision_at_k(relevant[corpus.source_ids[i]], ranking, k) for i, ranking in zip(rows, ranked)]
    return {name: 100.0 * sum(aps) / len(aps)}


# ---------------------------------------------------------------------------------------------
# One corpus, one task
# ---------------------------------------------------------------------------------------------

def limit_corpus(corpus: RetrievalCorpus, max_examples: int | None) -> RetrievalCorpus:
    """The corpus cut to its first `max_examples` source sentences (queries), for
    `DataOptions.max_examples` (a study's max_eval_examples); None or more than there are: as is.

    The candidates kept are every candidate gold-paired with a kept query, then the other
    candidates in file order until there are as many candidates as queries (or all the gold
    ones, if more), in the corpus's order; gold pairs of dropped queries are dropped. So a
    capped Tatoeba is the first N translation pairs, a capped BUCC keeps its gold pairs among
    the first N source sentences plus distractors, a capped LAReQA keeps every answer of its
    questions. Fewer candidates make the search easier: capped scores compare only with scores
    capped alike.
    """
    if max_examples is None or len(corpus.source_ids) <= max_examples:
        return corpus
    sources = set(corpus.source_ids[:max_examples])
    gold = tuple(pair for pair in corpus.gold if pair[0] in sources)
    keep = {target for _, target in gold}
    room = max(max_examples, len(keep)) - len(keep)
    for target in corpus.target_ids:
        if room <= 0:
            break
        if target not in keep:
            keep.add(target)
            room -= 1
    targets = [j for j, tid in enumerate(corpus.target_ids) if tid in keep]
    return RetrievalCorpus(corpus.source_ids[:max_examples], corpus.source_sentences[:max_examples],
                           tuple(corpus.target_ids[j] for j in targets),
                           tuple(corpus.target_sentences[j] for j in targets), gold)

def evaluate_corpus(task: TaskSpec, corpus: RetrievalCorpus, model, tokenizer, *, layer: int | None = None,
                    batch_size: int = 64, max_length: int | None = None, device: str | torch.device = "cpu",
                    threshold: float | None = None) -> dict[str, float]:
    """The task's retrieval scores on one corpus: Tatoeba-style when `task.metric` is accuracy,
    BUCC-style (with `threshold`, see `bucc_scores`) when it is f1, ranked (`map_scores`) when
    it is map_at_20."""
    if task.metric not in (TATOEBA_METRIC, BUCC_METRIC, MAP_METRIC):
        raise ValueError(f"retrieval task {task.name}: metric {task.metric!r} is neither {TATOEBA_METRIC!r} "
                         f"(Tatoeba-style search), {BUCC_METRIC!r} (BUCC-style mining) nor {MAP_METRIC!r} (ranking)")
    max_length = max_length or task.max_length
    source = embed_sentences(model, tokenizer, corpus.source_sentences, layer, batch_size, max_length, device)
    target = embed_sentences(model, tokenizer, corpus.target_sentences, layer, batch_size, max_length, device)
    if task.metric == TATOEBA_METRIC:
        return tatoeba_scores(corpus, source, target)
    if task.metric == MAP_METRIC:
        return map_scores(corpus, source, target)
    return bucc_scores(bucc_candidates(corpus, source, target), corpus.gold, threshold)


def evaluate_retrieval(task: TaskSpec, model, tokenizer, options: DataOptions = DataOptions(), *,
                       split: str = "dev", languages: tuple[str, ...] | None = None, layer: int | None = None,
                       batch_size: int = 64, max_length: int | None = None,
                       device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """{language: scores} over `languages`, each corpus loaded with `options` (its loader
    returns a one-element list holding the `RetrievalCorpus`) and cut to
    `options.max_examples` queries (`limit_corpus`). BUCC thresholds are chosen per language on
    the split itself (XTREME's dev procedure).

    `languages` None: every language of the task that has data (`TaskSpec.has_data`), so a
    partial local copy (the shared samples hold BUCC zh only) scores what it has, as the
    zero-shot evaluation of the other kinds does; an error when none has any.
    """
    if kind_of(task).trainable:
        raise ValueError(f"task {task.name} is of kind {task.kind!r}, not retrieval")
    if languages is None:
        languages = tuple(l for l in task.languages if task.has_data(split, l, options))
        if not languages:
            raise TaskDataError(f"task {task.name}: no language has {split} data (data_dir {options.data_dir!r}); "
                                "fix: point data_dir at the task's files (docs/tasks.md)")
    results = {}
    for language in languages:
        loaded = task.load(split, language, options)
        if len(loaded) != 1 or not isinstance(loaded[0], RetrievalCorpus):
            raise ValueError(f"retrieval task {task.name} ({split}, {language}): the loader must return one "
                             f"RetrievalCorpus, got {len(loaded)} item(s)")
        corpus = limit_corpus(loaded[0], options.max_examples)
        results[language] = evaluate_corpus(task, corpus, model, tokenizer, layer=layer, batch_size=batch_size,
                                            max_length=max_length, device=device)
    return results
