"""Compare `xstilts evaluate` (xstilts.tasks.xtreme_eval.score_folders) with XTREME's official `evaluate.py`.

Usage:
    python benchmarks/compare_official_xtreme_eval.py /tmp/xtreme/evaluate.py [--data ../shared/data]
        [--seed 0] [--max-examples 2000] [--keep DIR]

The argument is a local copy of google-research/xtreme's `evaluate.py`, with its `third_party/`
folder next to it (it imports `third_party.evaluate_squad` and friends). Nothing of it is kept
in this project: get it with e.g. `git clone https://github.com/google-research/xtreme /tmp/xtreme`.

What it does:
1. Builds a label folder L in the official layout for all 9 tasks and every official language,
   from the real samples in ../shared/data (read there, written only to a temporary folder).
   Where a language has no real sample here, a real sample of another language stands in
   (listed in the output); for MLQA the answer language matters, so all 7 MLQA languages use
   real text of that language (ar and hi from XQuAD).
2. Builds a prediction folder P by perturbing the labels with a seeded RNG: wrong labels, tag
   substitutions and B-/I- boundary errors, dropped/added/duplicated BUCC pairs, QA answers with
   changed case/punctuation/articles, truncated or shifted spans, empty and missing answers, extra
   ids; some files get CRLF line ends and trailing blanks.
3. Runs the official `evaluate()` (version "xtreme") and `score_folders`, and prints the max abs
   difference per task/metric (over languages and the averages), per group and for all_task.
   Last line: `figure: max_abs_diff <value>` (inf when the two disagree on which keys exist).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import math
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xstilts.tasks.xtreme_eval import OFFICIAL_LANGUAGES, TASK_GROUPS, file_extension, score_folders  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"

TATOEBA_ISO3 = {
    "afr": "af", "ara": "ar", "ben": "bn", "bul": "bg", "cmn": "zh", "deu": "de", "ell": "el",
    "est": "et", "eus": "eu", "fin": "fi", "fra": "fr", "heb": "he", "hin": "hi", "hun": "hu",
    "ind": "id", "ita": "it", "jav": "jv", "jpn": "ja", "kat": "ka", "kaz": "kk", "kor": "ko",
    "mal": "ml", "mar": "mr", "nld": "nl", "pes": "fa", "por": "pt", "rus": "ru", "spa": "es",
    "swh": "sw", "tam": "ta", "tel": "te", "tgl": "tl", "tha": "th", "tur": "tr", "urd": "ur",
    "vie": "vi",
}


# ------------------------------------------------------------------------------------------
# Reading the real samples (labels only)
# ------------------------------------------------------------------------------------------

def _cap(items: list, limit: int | None) -> list:
    return items if not limit else items[:limit]


def _last_column(path: Path, header: bool = False) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL if header else csv.QUOTE_NONE))
    if header:
        rows = rows[1:]
    return [row[-1].strip() for row in rows if row]


def _conll_sentences(path: Path, column: int, comment: str | None = "#") -> list[list[str]]:
    sentences, tags = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip():
                if tags:
                    sentences.append(tags)
                tags = []
                continue
            if comment and line.startswith(comment):
                continue
            fields = line.split("\t")
            if column == 3 and ("-" in fields[0] or "." in fields[0]):  # CoNLL-U multiword / empty nodes
                continue
            tags.append(fields[column])
    if tags:
        sentences.append(tags)
    return sentences


def _squad_articles(path: Path, limit: int | None) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)["data"]
    if not limit:
        return data
    kept, count = [], 0
    for article in data:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if count >= limit:
                break
            paragraphs.append(paragraph)
            count += len(paragraph["qas"])
        if paragraphs:
            kept.append({"title": article.get("title", ""), "paragraphs": paragraphs})
        if count >= limit:
            break
    return kept


def real_labels(data: Path, limit: int | None) -> dict[str, dict[str, object]]:
    """task -> {lang: labels} for the languages with a real sample here."""
    out: dict[str, dict[str, object]] = {task: {} for task in OFFICIAL_LANGUAGES}
    for path in sorted((data / "pawsx").glob("dev-*.tsv")):
        out["pawsx"][path.stem[4:]] = _cap(_last_column(path), limit)
    out["pawsx"]["de"] = _cap(_last_column(data / "pawsx" / "de.test.tsv", header=True), limit)
    for path in sorted((data / "xnli").glob("dev-*.tsv")):
        out["xnli"][path.stem[4:]] = _cap(_last_column(path), limit)
    out["xnli"]["de"] = _cap(_last_column(data / "xnli" / "de.dev.tsv"), limit)
    for path in sorted((data / "panx").glob("dev-*.tsv")):
        out["panx"][path.stem[4:]] = _cap(_conll_sentences(path, 1, comment=None), limit)
    for path in sorted((data / "udpos").glob("*-ud-test.conllu")):
        out["udpos"][path.name.split("_")[0]] = _cap(_conll_sentences(path, 3), limit)
    with open(data / "bucc2018" / "zh-en.dev.gold", encoding="utf-8") as handle:
        out["bucc2018"]["zh"] = [tuple(line.rstrip("\n").split("\t")) for line in handle if line.strip()]
    for path in sorted((data / "tatoeba").glob("tatoeba.*-eng.eng")):
        iso3 = path.name.split(".")[1].split("-")[0]
        with open(path, encoding="utf-8") as handle:
            count = sum(1 for _ in handle)
        out["tatoeba"][TATOEBA_ISO3[iso3]] = [str(i) for i in range(len(_cap(list(range(count)), limit)))]
    for path in sorted((data / "xquad").glob("xquad.*.json")):
        out["xquad"][path.name.split(".")[1]] = _squad_articles(path, limit)
    for lang in ("en", "es", "vi", "zh"):
        out["mlqa"][lang] = _squad_articles(data / "mlqa" / f"dev-context-{lang}-question-{lang}.json", limit)
    out["mlqa"]["de"] = _squad_articles(data / "mlqa" / "mlqa.de.de.validation.squad.json", limit)
    for lang in ("ar", "hi"):  # real Arabic / Hindi QA text, for MLQA's language-specific normalisation
        out["mlqa"][lang] = out["xquad"][lang]
    out["tydiqa"]["en"] = _squad_articles(data / "tydiqa" / "tydiqa.goldp.en.train.json", limit)
    for lang in ("ar", "ru"):
        out["tydiqa"][lang] = out["xquad"][lang]
    return out


# ------------------------------------------------------------------------------------------
# Perturbing labels into predictions
# ------------------------------------------------------------------------------------------

def _write_lines(path: Path, lines: list[str], rng: random.Random, messy: bool) -> None:
    end = "\r\n" if messy and rng.random() < 0.5 else "\n"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for line in lines:
            pad = rng.choice(["", " ", "\t", "  "]) if messy and rng.random() < 0.2 else ""
            handle.write(line + pad + end)


def _write_sentences(path: Path, sentences: list[list[str]], rng: random.Random, messy: bool) -> None:
    lines: list[str] = []
    for tags in sentences:
        lines.extend(tags)
        lines.append("")
    if lines and messy and rng.random() < 0.5:
        lines.pop()  # final blank line is optional
    _write_lines(path, lines, rng, messy)


def perturb_labels(labels: list[str], rng: random.Random, rate: float) -> list[str]:
    choices = sorted(set(labels)) or ["0"]
    return [rng.choice(choices) if rng.random() < rate else label for label in labels]


def perturb_tags(sentences: list[list[str]], rng: random.Random) -> list[list[str]]:
    tag_set = sorted({tag for tags in sentences for tag in tags})
    out = []
    for tags in sentences:
        new = []
        for tag in tags:
            r = rng.random()
            if r < 0.08:
                tag = rng.choice(tag_set)
            elif r < 0.14 and tag[:2] in ("B-", "I-"):  # boundary errors, incl. I- after O
                tag = ("I-" if tag.startswith("B-") else "B-") + tag[2:]
            elif r < 0.17 and tag[:2] in ("B-", "I-"):
                tag = "O"
            new.append(tag)
        out.append(new)
    return out


def perturb_pairs(pairs: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    targets = [en for _, en in pairs]
    out = []
    for src, en in pairs:
        r = rng.random()
        if r < 0.15:
            continue  # missed pair
        if r < 0.3:
            en = rng.choice(targets)  # wrong target (sometimes right by chance)
        out.append((src, en))
        if rng.random() < 0.1:
            out.append((src, en))  # duplicate
    for _ in range(len(pairs) // 10):
        out.append((rng.choice(pairs)[0], f"en-{rng.randrange(10**9):09d}"))  # spurious pair
    rng.shuffle(out)
    return out


def _vary_answer(text: str, context: str, start: int | None, rng: random.Random) -> str:
    r = rng.random()
    words = text.split()
    if r < 0.3:
        return text
    if r < 0.4:
        return text.upper() if rng.random() < 0.5 else text.lower()
    if r < 0.5:
        return rng.choice(["The ", "a ", "el ", "die ", "ال", "những ", ""]) + text + rng.choice([".", ",", "!", "」", "。", "?", ""])
    if r < 0.62 and len(words) > 1:
        cut = rng.randrange(1, len(words))
        return " ".join(words[:cut] if rng.random() < 0.5 else words[cut:])
    if r < 0.62 and len(text) > 1:  # e.g. Chinese answers without spaces
        cut = rng.randrange(1, len(text))
        return text[:cut] if rng.random() < 0.5 else text[cut:]
    if r < 0.75 and start is not None and 0 <= start <= len(context):
        lo = max(0, start - rng.randrange(0, 15))
        hi = min(len(context), start + len(text) + rng.randrange(0, 15))
        return context[lo:hi]
    if r < 0.85:
        lo = rng.randrange(0, max(1, len(context) - 30))
        return context[lo:lo + rng.randrange(1, 30)]
    if r < 0.9:
        return text.replace(" ", "-")
    return ""


def perturb_qa(articles: list[dict], rng: random.Random) -> dict[str, str]:
    predictions: dict[str, str] = {}
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph.get("context", "")
            for qa in paragraph["qas"]:
                if rng.random() < 0.05:
                    continue  # unanswered
                answer = rng.choice(qa["answers"])
                predictions[qa["id"]] = _vary_answer(answer["text"], context, answer.get("answer_start"), rng)
    for i in range(3):
        predictions[f"extra-id-{i}"] = "ignored"
    return predictions


# ------------------------------------------------------------------------------------------
# Building the folders
# ------------------------------------------------------------------------------------------

def build_folders(data: Path, prediction_folder: Path, label_folder: Path, seed: int,
                  limit: int | None, tasks: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Write P and L for `tasks` (default all 9) and every official language.
    Returns task -> {lang: source language} for the languages that use a stand-in sample."""
    real = real_labels(data, limit)
    rng = random.Random(seed)
    stand_ins: dict[str, dict[str, str]] = {}
    for task, langs in OFFICIAL_LANGUAGES.items():
        if tasks is not None and task not in tasks:
            continue
        (prediction_folder / task).mkdir(parents=True, exist_ok=True)
        (label_folder / task).mkdir(parents=True, exist_ok=True)
        available = sorted(real[task])
        for i, lang in enumerate(langs):
            source = lang if lang in real[task] else available[i % len(available)]
            if source != lang:
                stand_ins.setdefault(task, {})[lang] = source
            labels = real[task][source]
            name = f"test-{lang}.{file_extension(task)}"
            pred_path, label_path = prediction_folder / task / name, label_folder / task / name
            messy = rng.random() < 0.5
            if task in ("pawsx", "xnli"):
                _write_lines(label_path, labels, rng, False)
                _write_lines(pred_path, perturb_labels(labels, rng, 0.3), rng, messy)
            elif task == "tatoeba":
                _write_lines(label_path, labels, rng, False)
                _write_lines(pred_path, perturb_labels(labels, rng, 0.25), rng, messy)
            elif task in ("panx", "udpos"):
                _write_sentences(label_path, labels, rng, False)
                _write_sentences(pred_path, perturb_tags(labels, rng), rng, messy)
            elif task == "bucc2018":
                gold = [(f"{lang}-{src.split('-', 1)[1]}", en) for src, en in labels]
                _write_lines(label_path, ["\t".join(p) for p in gold], rng, False)
                _write_lines(pred_path, ["\t".join(p) for p in perturb_pairs(gold, rng)], rng, messy)
            else:
                label_path.write_text(json.dumps({"version": "1.1", "data": labels}, ensure_ascii=False), encoding="utf-8")
                pred_path.write_text(json.dumps(perturb_qa(labels, rng), ensure_ascii=False), encoding="utf-8")
    return stand_ins


# ------------------------------------------------------------------------------------------
# Running both and comparing
# ------------------------------------------------------------------------------------------

def load_official(path: Path):
    path = path.resolve()
    sys.path.insert(0, str(path.parent))  # for its `third_party` imports
    spec = importlib.util.spec_from_file_location("xtreme_official_evaluate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(ours: dict, official_groups: dict, official_tasks: dict) -> tuple[list[tuple[str, float]], float]:
    rows: list[tuple[str, float]] = []
    theirs = dict(official_groups)
    theirs.update(official_tasks)
    worst = 0.0
    if set(ours) != set(theirs):
        rows.append((f"KEYS DIFFER ours-only={sorted(set(ours) - set(theirs))} "
                     f"official-only={sorted(set(theirs) - set(ours))}", math.inf))
        worst = math.inf
    for key in [k for k in ours if k in theirs]:
        a, b = ours[key], theirs[key]
        if not isinstance(a, dict):
            diff = abs(a - b)
            rows.append((key, diff))
            worst = max(worst, diff)
            continue
        if set(a) != set(b):
            rows.append((f"{key}: METRIC KEYS DIFFER {sorted(set(a) ^ set(b))}", math.inf))
            worst = math.inf
        for metric in [m for m in a if m in b]:
            if isinstance(a[metric], dict):
                if set(a[metric]) != set(b[metric]):
                    rows.append((f"{key}/{metric}: LANGUAGES DIFFER", math.inf))
                    worst = math.inf
                diff = max((abs(a[metric][lang] - b[metric][lang]) for lang in a[metric] if lang in b[metric]), default=0.0)
            else:
                diff = abs(a[metric] - b[metric])
            rows.append((f"{key}/{metric}", diff))
            worst = max(worst, diff)
    return rows, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("official_evaluate", type=Path, help="path to a local copy of xtreme's evaluate.py")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared real samples (default ../shared/data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-examples", type=int, default=2000,
                        help="cap per language (lines / sentences / questions); 0 = all")
    parser.add_argument("--keep", type=Path, default=None, help="write P and L under this folder and keep them")
    args = parser.parse_args(argv)

    official = load_official(args.official_evaluate)
    work = Path(tempfile.mkdtemp(prefix="xtreme_compare_")) if args.keep is None else args.keep
    try:
        prediction_folder, label_folder = work / "predictions", work / "labels"
        stand_ins = build_folders(args.data, prediction_folder, label_folder, args.seed, args.max_examples or None)
        with contextlib.redirect_stderr(io.StringIO()):  # the official script reports each unanswered id
            groups, detailed = official.evaluate(str(prediction_folder), str(label_folder), "xtreme")
        ours = score_folders(str(prediction_folder), str(label_folder))
        rows, worst = compare(ours, groups, detailed)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"seed={args.seed} max_examples={args.max_examples or 'all'} data={args.data}")
    for task, mapping in stand_ins.items():
        print(f"stand-in samples for {task}: " + " ".join(f"{lang}<-{src}" for lang, src in mapping.items()))
    for name, diff in rows:
        print(f"{name}\t{diff:.3g}")
    print(f"all_task: ours={ours.get('all_task')!r} official={groups.get('all_task')!r}")
    print(f"groups present: {[g for g in TASK_GROUPS if g in ours]}")
    print(f"figure: max_abs_diff {worst:.3g}")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
