"""Alignment robustness (seed question 002, typologically distant languages): how well each
language's sentences align with their English parallels in an encoder's representation, before
intermediate training (the pretrained, phase-1 encoder) and after each intermediate task (the
study's cached phase-2 encoders), grouped by language family and by distance from English.

`xstilts align` (xstilts.study.align) embeds the parallel sentences, scores them here
(`score_pairs`) and logs the scores as a run nested under the study's run, with every pair's
values in its artifact (record_schema.ALIGN_ARTIFACT). The report reads that artifact
(`read_alignment`) and adds `alignment_tables` to its section "Gains by language family and
distance from English".

Two scores per (encoder, language), on the mean-pooled hidden states of one layer
(xstilts.tasks.retrieval.embed_sentences) of n parallel pairs (e_i English, x_i its translation):

- accuracy: English -> language top-1 retrieval, in percent. Pair i is a hit when x_i is strictly
  the most cosine-similar to e_i of x_1..x_n (a tie is a miss, so the score does not depend on the
  order of the sentences). XTREME's Tatoeba direction; chance is 100/n.
- cosine_gap: per pair g_i = cos(e_i, x_i) - mean over j != i of cos(e_i, x_j); the score is the
  mean of the g_i, which is exactly the mean cosine of the parallel pairs minus the mean cosine of
  all the non-parallel pairs. 0 when translations are no closer than unrelated sentences; 1 for
  identical embeddings of orthogonal sentences; at most 2.

Why this similarity score and not linear CKA: (1) it subtracts the cosine of unrelated pairs, so
the anisotropy of mean-pooled states (any two sentences of a small or fine-tuned encoder may have
cosine 0.9) does not pass for alignment; (2) it is a mean of per-pair terms, so resampling the
pairs (the bootstrap below) and pairing the same sentences across encoders are exact; CKA is a
statistic of the whole set that a bootstrap resample biases (duplicated rows inflate it), with no
per-pair term; (3) CKA compares the two languages' Gram matrices, invariant to any rotation
between them, so it can be high while x_i lies nowhere near e_i; zero-shot transfer through one
shared head needs x_i near e_i, which is what the gap (and the retrieval accuracy) measure.

The change after an intermediate task, per group of languages (`GROUPINGS`: distance bucket and
family, tasks/languages.py): the mean over the group's languages of (after - before), with a 95 %
percentile-bootstrap interval over sentences: each draw resamples every language's parallel pairs
with replacement, the same pairs for both encoders (paired: the same sentences), 2,000 draws,
seeded. Hits are computed once against the full set of n candidates; the bootstrap resamples the
pairs scored, not the candidate pool (as the usual bootstrap of a test-set accuracy). Where the
interval includes 0 the table says "not resolved at this budget".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xstilts.analysis.uncertainty import Interval
from xstilts.tasks.languages import distance_rank, language_info
from xstilts.tasks.record_schema import ALIGN_ACCURACY, ALIGN_ARTIFACT, ALIGN_BASE, ALIGN_COSINE_GAP, ALIGN_KIND

LEVEL = 0.95
DRAWS = 2000
CHUNK_DRAWS = 500  # draws resampled at once (memory: CHUNK_DRAWS x pairs indices)
NOT_RESOLVED = "not resolved at this budget"
SCORES = (ALIGN_ACCURACY, ALIGN_COSINE_GAP)
SCORE_TITLES = {ALIGN_ACCURACY: "retrieval accuracy (%)", ALIGN_COSINE_GAP: "cosine gap"}
GROUPINGS = ("distance", "family")
# The report section of seed question 002 (xstilts.analysis.report.question_sections) that the tables join.
FAMILY_SECTION = "Gains by language family and distance from English"


# ------------------------------------------------------------------------------------------------
# The scores of one encoder on one language's parallel pairs
# ------------------------------------------------------------------------------------------------

def parallel_pairs(corpus, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(English sentences, their translations) from a `RetrievalCorpus`'s gold pairs (Tatoeba: every
    line; BUCC: the gold pairs, distractors dropped), in gold order, at most `limit`. A pair whose
    English sentence or translation already occurs in an earlier pair is dropped: two identical
    candidates cannot be told apart, so a duplicate would make a hit impossible."""
    source = dict(zip(corpus.source_ids, corpus.source_sentences))
    english = dict(zip(corpus.target_ids, corpus.target_sentences))
    seen_english, seen_source = set(), set()
    pairs_en, pairs_xx = [], []
    for source_id, english_id in corpus.gold:
        if source_id not in source or english_id not in english:
            continue
        e, x = english[english_id], source[source_id]
        if e in seen_english or x in seen_source:
            continue
        seen_english.add(e)
        seen_source.add(x)
        pairs_en.append(e)
        pairs_xx.append(x)
        if limit is not None and len(pairs_en) >= limit:
            break
    return pairs_en, pairs_xx


def _unit(rows) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1.0, norms)


def score_pairs(english, other, chunk: int = 1024) -> dict[str, np.ndarray]:
    """{"hits": [n] bool, "gaps": [n] float64} of n parallel pairs: row i of `english` and row i of
    `other` ([n, hidden] arrays or tensors) embed a sentence and its translation (module doc)."""
    e, x = _unit(english), _unit(other)
    n = len(e)
    if n < 2 or e.shape != x.shape:
        raise ValueError(f"score_pairs needs two [n, hidden] arrays of the same shape with n >= 2, got {e.shape} and {x.shape}")
    hits, gaps = np.empty(n, dtype=bool), np.empty(n, dtype=np.float64)
    for begin in range(0, n, chunk):
        rows = np.arange(begin, min(begin + chunk, n))
        sims = e[rows] @ x.T  # [rows, n]
        parallel = sims[np.arange(len(rows)), rows]
        gaps[rows] = parallel - (sims.sum(axis=1) - parallel) / (n - 1)
        sims[np.arange(len(rows)), rows] = -np.inf
        hits[rows] = parallel > sims.max(axis=1)
    return {"hits": hits, "gaps": gaps}


def summarize_pairs(scored: dict[str, np.ndarray]) -> dict[str, float]:
    """The two scores (and the pair count and chance accuracy) of `score_pairs`' per-pair values."""
    n = len(scored["hits"])
    return {ALIGN_ACCURACY: 100.0 * float(np.mean(scored["hits"])), ALIGN_COSINE_GAP: float(np.mean(scored["gaps"])),
            "pairs": n, "chance": 100.0 / n}


# ------------------------------------------------------------------------------------------------
# The record of one `xstilts align` run (what its artifact holds)
# ------------------------------------------------------------------------------------------------

def new_result(study: str, task: str, split: str, layer: int, max_pairs: int, direction: str = "en->xx") -> dict:
    """An empty record; `add_encoder` and `add_scores` fill it. JSON as it is."""
    return {"study": study, "task": task, "split": split, "layer": layer, "max_pairs": max_pairs,
            "direction": direction, "encoders": [], "languages": {}, "scores": {}, "pairs": {}}


def add_encoder(result: dict, name: str, intermediate: str, label: str, path: str | None,
                learning_rate: float | None = None, seed_index: int = 0) -> None:
    """An encoder measured: `name` is its record_schema.align_encoder segment (ALIGN_BASE first)."""
    result["encoders"].append({"name": name, "intermediate": intermediate, "label": label, "path": path,
                               "learning_rate": learning_rate, "seed_index": seed_index})
    result["scores"].setdefault(name, {})
    result["pairs"].setdefault(name, {})


def add_scores(result: dict, encoder: str, language: str, scored: dict[str, np.ndarray]) -> dict[str, float]:
    """Record one (encoder, language): its summary scores and every pair's values."""
    summary = summarize_pairs(scored)
    info = language_info(language)
    result["languages"].setdefault(language, {"pairs": summary["pairs"], "family": info.family,
                                              "distance": info.distance, "name": info.name})
    result["scores"][encoder][language] = summary
    result["pairs"][encoder][language] = {"hits": "".join("1" if h else "0" for h in scored["hits"]),
                                          "gaps": [round(float(g), 6) for g in scored["gaps"]]}
    return summary


def language_means(result: dict, encoder: str) -> dict[str, float]:
    """An encoder's scores averaged over its languages (record_schema.ALIGN_MEAN)."""
    found = result["scores"].get(encoder, {})
    return {score: float(np.mean([s[score] for s in found.values()])) for score in SCORES} if found else {}


def _per_pair(result: dict, encoder: str, language: str, score: str) -> np.ndarray | None:
    found = result["pairs"].get(encoder, {}).get(language)
    if found is None:
        return None
    if score == ALIGN_ACCURACY:
        return 100.0 * (np.frombuffer(found["hits"].encode("ascii"), dtype=np.uint8).astype(np.float64) - ord("0"))
    return np.asarray(found["gaps"], dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# Change after each intermediate task, per group of languages, with bootstrap intervals
# ------------------------------------------------------------------------------------------------

def group_languages(languages, grouping: str) -> dict[str, list[str]]:
    """{group: languages} by "distance" (buckets in order of distance from English) or "family"
    (alphabetical), languages in their given order; tasks/languages.py's metadata."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping {grouping!r} is neither of {', '.join(GROUPINGS)}")
    groups: dict[str, list[str]] = {}
    for language in languages:
        info = language_info(language)
        groups.setdefault(info.distance if grouping == "distance" else info.family, []).append(language)
    order = sorted(groups, key=distance_rank) if grouping == "distance" else sorted(groups)
    return {group: groups[group] for group in order}


def paired_bootstrap(differences: list[np.ndarray], draws: int = DRAWS, level: float = LEVEL,
                     seed: int = 0) -> tuple[float, float, float]:
    """(delta, low, high): delta = the mean over languages of each language's mean per-pair
    difference (after - before); [low, high] its percentile-bootstrap interval, every draw
    resampling each language's pairs with replacement (numpy's default linear quantiles)."""
    if not differences or any(len(d) == 0 for d in differences):
        raise ValueError("paired_bootstrap needs at least one language with at least one pair")
    delta = float(np.mean([np.mean(d) for d in differences]))
    rng = np.random.default_rng(seed)
    total = np.zeros(draws)
    for d in differences:
        for begin in range(0, draws, CHUNK_DRAWS):
            stop = min(draws, begin + CHUNK_DRAWS)
            total[begin:stop] += d[rng.integers(0, len(d), size=(stop - begin, len(d)))].mean(axis=1)
    samples = total / len(differences)
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return delta, float(low), float(high)


@dataclass(frozen=True)
class ChangeRow:
    grouping: str
    group: str
    languages: tuple[str, ...]  # the group's languages both encoders were measured on
    encoder: str  # the phase-2 encoder's name (record_schema.align_encoder)
    label: str  # how the tables name it
    score: str  # ALIGN_ACCURACY or ALIGN_COSINE_GAP
    pairs: int  # over the group's languages
    before: float  # mean over the languages, phase-1 encoder
    after: float
    delta: float
    low: float
    high: float

    @property
    def resolved(self) -> bool:  # the same rule as every interval of the report
        return Interval(self.delta, self.low, self.high).resolved

    @property
    def verdict(self) -> str:
        return ("better aligned" if self.delta > 0 else "less aligned") if self.resolved else NOT_RESOLVED


def changes(result: dict, grouping: str, draws: int = DRAWS, seed: int = 0) -> list[ChangeRow]:
    """Per group, phase-2 encoder and score: the change from the phase-1 encoder (module doc)."""
    rows = []
    languages = list(result["languages"])
    for group, members in group_languages(languages, grouping).items():
        for encoder in result["encoders"]:
            if encoder["name"] == ALIGN_BASE:
                continue
            for score in SCORES:
                before, after, covered = [], [], []
                for language in members:
                    b, a = (_per_pair(result, ALIGN_BASE, language, score),
                            _per_pair(result, encoder["name"], language, score))
                    if b is not None and a is not None and len(a) == len(b):
                        before.append(b)
                        after.append(a)
                        covered.append(language)
                if not covered:
                    continue
                delta, low, high = paired_bootstrap([a - b for a, b in zip(after, before)], draws, seed=seed)
                rows.append(ChangeRow(grouping, group, tuple(covered), encoder["name"], encoder["label"], score,
                                      sum(len(b) for b in before), float(np.mean([b.mean() for b in before])),
                                      float(np.mean([a.mean() for a in after])), delta, low, high))
    return rows


def changes_json(result: dict, draws: int = DRAWS) -> list[dict]:
    return [{**vars(row), "languages": list(row.languages), "verdict": row.verdict}
            for grouping in GROUPINGS for row in changes(result, grouping, draws)]


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------

def _interval(low: float, high: float, digits: int) -> str:
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def change_table(result: dict, grouping: str, draws: int = DRAWS):
    """The change after each intermediate task per group: both scores, with intervals and verdicts."""
    from xstilts.analysis.tables import Table

    rows = changes(result, grouping, draws)
    if not rows:
        return None
    by_key: dict[tuple[str, str], dict[str, ChangeRow]] = {}
    for row in rows:
        by_key.setdefault((row.group, row.encoder), {})[row.score] = row
    body = []
    for (group, _), found in by_key.items():
        first = next(iter(found.values()))
        cells = [group, " ".join(first.languages), first.label, str(first.pairs)]
        for score, digits in ((ALIGN_ACCURACY, 1), (ALIGN_COSINE_GAP, 4)):
            row = found.get(score)
            cells += (["–"] * 5 if row is None else
                      [f"{row.before:.{digits}f}", f"{row.after:.{digits}f}", f"{row.delta:+.{digits}f}",
                       _interval(row.low, row.high, digits), row.verdict])
        body.append(cells)
    what = "distance from English" if grouping == "distance" else "language family"
    per = ["before", "after", "Δ", f"{LEVEL:.0%} interval", "verdict"]
    return Table(
        f"alignment_{grouping}", f"Alignment with English by {what}: change after each intermediate task",
        [what, "languages", "intermediate (phase-2 encoder)", "pairs"] + per + per, body,
        groups=[("", 3), (SCORE_TITLES[ALIGN_ACCURACY], 5), (SCORE_TITLES[ALIGN_COSINE_GAP], 5)],
        notes=[f"`xstilts align`: parallel pairs of {result['task']} ({result['split']}; at most {result['max_pairs']} a "
               f"language), mean-pooled hidden states of layer {result['layer']}; before = the pretrained (phase-1) "
               "encoder, after = the cached phase-2 encoder of the intermediate task; values are means over the "
               "row's languages.",
               "Retrieval accuracy: each English sentence searches the language's sentences (top-1, cosine); chance "
               "= 100/pairs. Cosine gap: mean cosine of the parallel pairs minus mean cosine of the non-parallel pairs "
               "(0: translations no closer than unrelated sentences).",
               f"Interval: percentile bootstrap over sentences ({draws:,} draws; each language's pairs resampled, the "
               "same pairs for both encoders). A change is called only where its interval excludes 0; otherwise "
               f"\"{NOT_RESOLVED}\"."],
    )


def language_table(result: dict):
    """Both scores per language (rows, with family and distance) and encoder (column pairs)."""
    from xstilts.analysis.tables import Table

    encoders = [e for e in result["encoders"] if e["name"] in result["scores"]]
    if not encoders or not result["languages"]:
        return None
    order = sorted(result["languages"], key=lambda l: (distance_rank(language_info(l).distance), l))
    body = []
    for language in order:
        meta = result["languages"][language]
        cells = [language, meta["family"], meta["distance"], str(meta["pairs"])]
        for encoder in encoders:
            found = result["scores"][encoder["name"]].get(language)
            cells += ["–", "–"] if found is None else [f"{found[ALIGN_ACCURACY]:.1f}", f"{found[ALIGN_COSINE_GAP]:.4f}"]
        body.append(cells)
    means = ["mean", "", "", ""]
    for encoder in encoders:
        found = language_means(result, encoder["name"])
        means += [f"{found[ALIGN_ACCURACY]:.1f}", f"{found[ALIGN_COSINE_GAP]:.4f}"] if found else ["–", "–"]
    body.append(means)
    return Table(
        "alignment_languages", "Alignment with English per language: retrieval accuracy (%) and cosine gap",
        ["language", "family", "distance", "pairs"] + ["accuracy", "cosine gap"] * len(encoders), body,
        groups=[("", 3)] + [(e["label"], 2) for e in encoders],
        notes=[f"{result['task']} ({result['split']}), layer {result['layer']}; {ALIGN_BASE}: the pretrained encoder. "
               "Families and distance buckets: tasks/languages.py."],
        row_classes=[""] * len(order) + ["chance"],
    )


def alignment_tables(result: dict, draws: int = DRAWS) -> list:
    """The change tables (by distance, by family) and the per-language table."""
    found = [change_table(result, grouping, draws) for grouping in GROUPINGS] + [language_table(result)]
    return [table for table in found if table is not None]


# ------------------------------------------------------------------------------------------------
# Reading it back from MLflow (the report)
# ------------------------------------------------------------------------------------------------

def read_alignment(study) -> dict | None:
    """The artifact of the study's most recent finished `xstilts align` run, or None."""
    from xstilts.mlflow_store import kind_rows
    from xstilts.mlflow_store.runs import read_json_artifact

    rows = [row for row in kind_rows(study.tracking_uri, study.experiment_id, ALIGN_KIND, study.name)
            if row.status == "FINISHED"]
    if not rows:
        return None
    try:
        return read_json_artifact(study.tracking_uri, rows[0].run_id, ALIGN_ARTIFACT)
    except ValueError:  # not JSON
        return None


def alignment_blocks(study) -> list:
    """The report's blocks for the study's alignment run ([] without one)."""
    result = read_alignment(study)
    if result is None:
        return []
    intro = ("Alignment robustness (xstilts align): how well each language's sentences align with their English "
             "parallels before intermediate training (the pretrained encoder) and after each intermediate task "
             "(its phase-2 encoder), per distance bucket and language family.")
    return [intro, *alignment_tables(result)]


def add_to_report(sections: list, study, section_type) -> None:
    """Add `alignment_blocks` to the report's FAMILY_SECTION (`section_type(FAMILY_SECTION)`
    appended when the study's trials do not show that section)."""
    blocks = alignment_blocks(study)
    if not blocks:
        return
    section = next((s for s in sections if s.title == FAMILY_SECTION), None)
    if section is None:
        section = section_type(FAMILY_SECTION)
        sections.append(section)
    section.blocks += blocks

