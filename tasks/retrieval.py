"""Sentence retrieval (BUCC 2018, Tatoeba, LAReQA, Mewsli-X) with an encoder's pooled hidden
states: no training.

As in XTREME, a sentence's embedding is the mean of one layer's hidden states over its non-pad
tokens (the special tokens <s> and </s> included, XTREME's default), and sentences are compared
by cosine similarity (BUCC: by a margin over cosine similarities).

Layers are numbered as HF's `output_hidden_states` tuple: 0 is the embedding output, k (1 to
num_hidden_layers) the output of transformer layer k. XTREME's `--specific_layer` counts the
transformer layers from 0 with the embeddings left out, so its value is one less than ours:
its 7 for 12-layer mBERT is our 8, its 13 for 24-layer XLM-R large (Tatoeba) is our 14.
`default_layer` reproduces both: num_hidden_layers // 2 + 2, capped at the last layer (for the
2-layer tiny models: the last one). A negative layer counts from the end (-1: the last).

Tatoeba (XTREME's third_party/run_retrieval.py, similarity_search): each English sentence's
nearest source sentence by cosine similarity (XTREME searches English -> source; LASER's xx -> en
direction is `tatoeba_scores(..., direction="xx-en")`) is compared with the gold pair:
`accuracy` in percent.

BUCC (XTREME's third_party/utils_retrieve.py: mine_bitext with its defaults mode="mine",
retrieval="max", margin="ratio", neighborhood k=4, threshold 0; then bucc_optimize and
bucc_extract). Sentences are unified (mined once per distinct text; a pair whose sentence
occurs twice in its file is dropped, as XTREME cannot give it an id). Each source sentence's 4
nearest English sentences (forward) and each English sentence's 4 nearest source sentences
(backward) are scored with the ratio margin

    score(x, y) = cos(x, y) / ((sum of cos(x, z), z among x's 4 nearest English) / 8
                               + (sum of cos(y, w), w among y's 4 nearest sources) / 8)

(k capped at the other side's size); each sentence keeps its best candidate, and the forward
and backward best pairs, by decreasing score, form a 1-1 alignment (a pair is skipped when its
source or English sentence is already aligned); pairs scoring <= 0 are dropped. Pairs scoring
at least a threshold are predicted. The threshold maximises F1 against gold pairs
(`best_threshold`, bucc_optimize): on the dev split it is chosen on dev itself, so the dev F1
is an optimistic (upper) estimate (XTREME's dev procedure); on any other split it is chosen on
that language's dev gold and applied (XTREME's test procedure); `threshold=` fixes one (the
--threshold-style override). Scores: the shared `bucc_prf`.

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
from collections.abc import Mapping

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

TATOEBA_DIRECTIONS = ("en-xx", "xx-en")


def tatoeba_predictions(corpus: RetrievalCorpus, source_embeddings: torch.Tensor,
                        target_embeddings: torch.Tensor) -> dict[str, str]:
    """{source id: id of its nearest English sentence} (the xx -> en direction)."""
    _, indices = nearest(source_embeddings, target_embeddings)
    return {sid: corpus.target_ids[int(j)] for sid, j in zip(corpus.source_ids, indices)}


def tatoeba_scores(corpus: RetrievalCorpus, source_embeddings: torch.Tensor,
                   target_embeddings: torch.Tensor, direction: str = "en-xx") -> dict[str, float]:
    """{"accuracy": % of gold (source, English) pairs found by nearest-neighbour search}.

    direction "en-xx" (XTREME's run_retrieval.py / similarity_search: each English sentence
    searches the source sentences; a pair is right when its English sentence's nearest source
    sentence is its source), "xx-en" (LASER's: each source sentence searches the English ones).
    """
    if direction == "xx-en":
        predicted = tatoeba_predictions(corpus, source_embeddings, target_embeddings)
        return {"accuracy": accuracy([predicted[s] for s, _ in corpus.gold], [t for _, t in corpus.gold])}
    if direction != "en-xx":
        raise ValueError(f"Tatoeba direction {direction!r} is neither of {', '.join(TATOEBA_DIRECTIONS)}")
    _, indices = nearest(target_embeddings, source_embeddings)
    found = {tid: corpus.source_ids[int(i)] for tid, i in zip(corpus.target_ids, indices)}
    return {"accuracy": accuracy([found[t] for _, t in corpus.gold], [s for s, _ in corpus.gold])}


# ---------------------------------------------------------------------------------------------
# BUCC: XTREME's margin-based mining (third_party/utils_retrieve.py, mine_bitext) and threshold
# (bucc_optimize, bucc_extract); see the module doc.
# ---------------------------------------------------------------------------------------------

BUCC_K = 4  # XTREME's mine_bitext neighborhood
MARGINS = ("ratio", "distance", "absolute")
RETRIEVALS = ("max", "fwd", "bwd", "intersect")


def knn(query: torch.Tensor, database: torch.Tensor, k: int = BUCC_K,
        chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query row's min(k, len(database)) most cosine-similar database rows, best first:
    (similarities, indices), both [len(query), k]; equal similarities in database order.
    In chunks of `chunk` query rows."""
    k = min(k, len(database))
    q = torch.nn.functional.normalize(query.float(), dim=-1)
    d = torch.nn.functional.normalize(database.float(), dim=-1)
    sims, inds = [], []
    for begin in range(0, len(q), chunk):
        ordered = torch.sort(q[begin:begin + chunk] @ d.T, dim=1, descending=True, stable=True)
        sims.append(ordered.values[:, :k])
        inds.append(ordered.indices[:, :k])
    if not sims:
        return torch.zeros((0, k)), torch.zeros((0, k), dtype=torch.long)
    return torch.cat(sims), torch.cat(inds)


def _apply_margin(cosine: torch.Tensor, mean: torch.Tensor, margin: str) -> torch.Tensor:
    """XTREME's margin(a, b) with a = cos(x, y), b = (fwd mean of x + bwd mean of y) / 2."""
    if margin == "ratio":
        return cosine / mean
    if margin == "distance":
        return cosine - mean
    if margin == "absolute":
        return cosine
    raise ValueError(f"margin {margin!r} is neither of {', '.join(MARGINS)}")


def margin_scores(src_emb, tgt_emb, k: int = BUCC_K, margin: str = "ratio") -> torch.Tensor:
    """[len(src), len(tgt)] float64: every pair's margin score, dense (small inputs; mining
    scores only the k-nn candidates, `mine_pairs`). Ratio margin:

        score(x, y) = cos(x, y) / (sum of cos(x, z) over x's k nearest targets z / 2k
                                   + sum of cos(y, w) over y's k nearest sources w / 2k)

    with k capped at the other side's size. numpy arrays or tensors."""
    src = torch.nn.functional.normalize(torch.as_tensor(src_emb).double(), dim=-1)
    tgt = torch.nn.functional.normalize(torch.as_tensor(tgt_emb).double(), dim=-1)
    cosine = src @ tgt.T
    fwd_mean = cosine.topk(min(k, len(tgt)), dim=1).values.mean(1)
    bwd_mean = cosine.topk(min(k, len(src)), dim=0).values.mean(0)
    return _apply_margin(cosine, (fwd_mean[:, None] + bwd_mean[None, :]) / 2, margin)


def mine_pairs(src_emb, tgt_emb, k: int = BUCC_K, margin: str = "ratio", retrieval: str = "max",
               min_score: float | None = 0.0, chunk: int = 1024) -> list[tuple[int, int, float]]:
    """(source index, target index, margin score) candidate pairs as XTREME's mine_bitext in its
    default mode="mine", retrieval="max", margin="ratio", neighborhood=4, threshold=0:

    the k nearest targets of each source (forward) and the k nearest sources of each target
    (backward) are scored (`margin_scores`), each sentence keeps its best-scoring candidate
    (the first on ties), and then by retrieval:
      "max": forward and backward best pairs together, by decreasing score (forward first on
        ties), each kept unless its source or its target is already in a kept pair (a 1-1
        alignment); kept pairs scoring at most `min_score` are dropped (XTREME's threshold 0;
        None keeps all). Returned best first.
      "fwd" / "bwd": every source's (target's) best pair; "intersect": the forward best pairs
        that are also their target's backward best. (No `min_score` filter, as in XTREME.)
    """
    if retrieval not in RETRIEVALS:
        raise ValueError(f"retrieval {retrieval!r} is neither of {', '.join(RETRIEVALS)}")
    src = torch.as_tensor(src_emb).float()
    tgt = torch.as_tensor(tgt_emb).float()
    if len(src) == 0 or len(tgt) == 0:
        return []
    fwd_sim, fwd_ind = knn(src, tgt, k, chunk)
    bwd_sim, bwd_ind = knn(tgt, src, k, chunk)
    fwd_sim, bwd_sim = fwd_sim.double(), bwd_sim.double()
    fwd_mean, bwd_mean = fwd_sim.mean(1), bwd_sim.mean(1)
    fwd_scores = _apply_margin(fwd_sim, (fwd_mean[:, None] + bwd_mean[fwd_ind]) / 2, margin)
    bwd_scores = _apply_margin(bwd_sim, (bwd_mean[:, None] + fwd_mean[bwd_ind]) / 2, margin)
    fwd_pos, bwd_pos = fwd_scores.argmax(1), bwd_scores.argmax(1)  # first maximum, as numpy's argmax
    fwd_best = fwd_ind.gather(1, fwd_pos[:, None])[:, 0].tolist()
    bwd_best = bwd_ind.gather(1, bwd_pos[:, None])[:, 0].tolist()
    fwd_max = fwd_scores.gather(1, fwd_pos[:, None])[:, 0].tolist()
    bwd_max = bwd_scores.gather(1, bwd_pos[:, None])[:, 0].tolist()
    forward = [(i, j, value) for i, (j, value) in enumerate(zip(fwd_best, fwd_max))]
    backward = [(i, j, value) for j, (i, value) in enumerate(zip(bwd_best, bwd_max))]
    if retrieval == "fwd":
        return forward
    if retrieval == "bwd":
        return backward
    if retrieval == "intersect":
        return [(i, j, value) for i, j, value in forward if bwd_best[j] == i]
    pairs = sorted(forward + backward, key=lambda pair: -pair[2])  # stable: forward first on ties
    mined, seen_src, seen_tgt = [], set(), set()
    for i, j, value in pairs:
        if i in seen_src or j in seen_tgt:
            continue
        seen_src.add(i)
        seen_tgt.add(j)
        if min_score is None or value > min_score:
            mined.append((i, j, value))
    return mined


def _unique(ids, sentences) -> tuple[list[int], list[str | None]]:
    """Rows of the first occurrence of each distinct (stripped) sentence, and for each the id it
    maps back to: None for a sentence that occurs more than once (XTREME's text_load_unify and
    read_sent2id: a repeated sentence has no id, so its candidates are dropped)."""
    first: dict[str, int] = {}
    rows, mapped = [], []
    for row, (sid, sentence) in enumerate(zip(ids, sentences)):
        key = sentence.strip()
        if key in first:
            mapped[first[key]] = None
        else:
            first[key] = len(rows)
            rows.append(row)
            mapped.append(sid)
    return rows, mapped


def bucc_candidates(corpus: RetrievalCorpus, source_embeddings: torch.Tensor, target_embeddings: torch.Tensor,
                    *, k: int = BUCC_K, margin: str = "ratio", retrieval: str = "max",
                    unify: bool = True) -> list[tuple[str, str, float]]:
    """(source id, English id, score) of the mined pairs (`mine_pairs`), best first.

    unify (XTREME): sentences are mined once per distinct text, and pairs whose source or English
    sentence occurs more than once in its file are dropped (XTREME cannot map them to an id).
    margin="absolute", retrieval="fwd", unify=False: each source's most cosine-similar English
    sentence, this module's earlier plain-cosine protocol."""
    source_rows, source_ids = (_unique(corpus.source_ids, corpus.source_sentences) if unify
                               else (list(range(len(corpus.source_ids))), list(corpus.source_ids)))
    target_rows, target_ids = (_unique(corpus.target_ids, corpus.target_sentences) if unify
                               else (list(range(len(corpus.target_ids))), list(corpus.target_ids)))
    if not source_rows:
        return []
    if not target_rows:
        raise ValueError("no target (English) sentences to search")
    mined = mine_pairs(source_embeddings[source_rows], target_embeddings[target_rows], k, margin, retrieval)
    best: dict[tuple[str, str], float] = {}
    for i, j, value in mined:
        if source_ids[i] is not None and target_ids[j] is not None:
            pair = (source_ids[i], target_ids[j])
            best[pair] = max(value, best.get(pair, value))  # XTREME's read_candidate2score
    return sorted(((s, t, value) for (s, t), value in best.items()), key=lambda c: -c[2])


def best_threshold(candidates: list[tuple[str, str, float]], gold) -> tuple[float, float]:
    """(threshold, F1 in percent): the score threshold (predict pairs scoring >= it) that
    maximises F1 against `gold`, XTREME's bucc_optimize.

    Candidates are cut only between different scores (equal scores are kept or dropped
    together; bucc_optimize may cut between equal scores, whose midpoint then keeps both); the
    threshold is the midpoint between the last kept and the first dropped score (as
    bucc_optimize), or the last kept score when nothing is dropped (bucc_optimize fails there).
    Among equally good cuts the highest threshold wins (bucc_optimize's strict >). When no
    candidate is a gold pair, the threshold is just above the best score (nothing predicted;
    bucc_optimize returns 0) and F1 is 0; with no candidates it is +inf.
    """
    gold = {tuple(g) for g in gold}
    ranked = sorted(candidates, key=lambda c: -c[2])
    if not ranked:
        return math.inf, 0.0
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
    return threshold, 100.0 * best_f1


def optimal_threshold(candidates: list[tuple[str, str, float]], gold) -> float:
    """The F1-optimal threshold of `best_threshold`."""
    return best_threshold(candidates, gold)[0]


def bucc_scores(candidates: list[tuple[str, str, float]], gold, threshold: float | None = None) -> dict[str, float]:
    """precision/recall/f1 (shared `bucc_prf`) of the candidates scoring >= `threshold`
    (XTREME's bucc_extract), and the threshold itself; None: the F1-optimal threshold on these
    candidates (see the module doc)."""
    gold = [tuple(g) for g in gold]
    if threshold is None:
        threshold = optimal_threshold(candidates, gold)
    predicted = [(s, t) for s, t, value in candidates if value >= threshold]
    return {**bucc_prf(predicted, gold), "threshold": threshold}


def bucc_split_scores(corpus: RetrievalCorpus, source_embeddings: torch.Tensor, target_embeddings: torch.Tensor,
                      *, threshold: float | None = None, dev=None, k: int = BUCC_K, margin: str = "ratio",
                      retrieval: str = "max") -> dict[str, float]:
    """BUCC scores of one corpus: its mined candidates cut at `threshold`; None: at the threshold
    that maximises F1 on `dev`'s gold, `dev` = (dev corpus, its source embeddings, its English
    embeddings), XTREME's test procedure; `dev` None too: at this corpus's own F1-optimal
    threshold (XTREME's dev procedure)."""
    options = {"k": k, "margin": margin, "retrieval": retrieval}
    candidates = bucc_candidates(corpus, source_embeddings, target_embeddings, **options)
    if threshold is None and dev is not None:
        dev_corpus, dev_source, dev_target = dev
        threshold, _ = best_threshold(bucc_candidates(dev_corpus, dev_source, dev_target, **options), dev_corpus.gold)
    return bucc_scores(candidates, corpus.gold, threshold)


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
                    threshold: float | None = None,
                    threshold_corpus: RetrievalCorpus | None = None) -> dict[str, float]:
    """The task's retrieval scores on one corpus: Tatoeba-style when `task.metric` is accuracy,
    BUCC-style when it is f1 (`bucc_split_scores`: cut at `threshold`, else at the F1-optimal
    threshold on `threshold_corpus`'s gold, else on this corpus's own), ranked (`map_scores`)
    when it is map_at_20."""
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
    dev = None
    if threshold is None and threshold_corpus is not None:
        dev = (threshold_corpus,
               embed_sentences(model, tokenizer, threshold_corpus.source_sentences, layer, batch_size, max_length, device),
               embed_sentences(model, tokenizer, threshold_corpus.target_sentences, layer, batch_size, max_length, device))
    return bucc_split_scores(corpus, source, target, threshold=threshold, dev=dev)


def _load_corpus(task: TaskSpec, split: str, language: str, options: DataOptions) -> RetrievalCorpus:
    loaded = task.load(split, language, options)
    if len(loaded) != 1 or not isinstance(loaded[0], RetrievalCorpus):
        raise ValueError(f"retrieval task {task.name} ({split}, {language}): the loader must return one "
                         f"RetrievalCorpus, got {len(loaded)} item(s)")
    return limit_corpus(loaded[0], options.max_examples)


def evaluate_retrieval(task: TaskSpec, model, tokenizer, options: DataOptions = DataOptions(), *,
                       split: str = "dev", languages: tuple[str, ...] | None = None, layer: int | None = None,
                       batch_size: int = 64, max_length: int | None = None,
                       device: str | torch.device = "cpu",
                       threshold: float | Mapping[str, float] | None = None) -> dict[str, dict[str, float]]:
    """{language: scores} over `languages`, each corpus loaded with `options` (its loader
    returns a one-element list holding the `RetrievalCorpus`) and cut to
    `options.max_examples` queries (`limit_corpus`).

    BUCC thresholds, per language: `threshold` when given (one number for every language, or
    {language: threshold}; a language missing from it is treated as below); else on the dev
    split the F1-optimal threshold of dev itself (XTREME's dev procedure: an optimistic
    estimate), on any other split the F1-optimal threshold of that language's dev split (its
    gold), applied to the split (XTREME's test procedure; dev is loaded and capped alike).

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
        corpus = _load_corpus(task, split, language, options)
        fixed = threshold.get(language) if isinstance(threshold, Mapping) else threshold
        threshold_corpus = None
        if task.metric == BUCC_METRIC and fixed is None and split != "dev":
            threshold_corpus = _load_corpus(task, "dev", language, options)
        results[language] = evaluate_corpus(task, corpus, model, tokenizer, layer=layer, batch_size=batch_size,
                                            max_length=max_length, device=device, threshold=fixed,
                                            threshold_corpus=threshold_corpus)
    return results
