"""Phase 1 of the embedded default: a tiny XLM-R-architecture MLM, pretrained briefly, cached.

Real studies name an HF model (`xlm-roberta-large`) or a local folder; the embedded default
names `EMBEDDED_MODEL` instead, which this module turns into an ordinary local HF folder
(XLMRobertaForMaskedLM + XLM-R tokenizer) before the study starts. From then on the code path is
the same as for any other model: `from_pretrained(path)`.

The tokenizer is a Unigram model (XLM-R's tokenizer type) whose pieces are the words of the
synthetic corpus plus single characters as fallback; the MLM pre-training on all four synthetic
languages is what gives the encoder something shared across languages to transfer.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

EMBEDDED_MODEL = "embedded:tiny-xlmr"


@dataclass(frozen=True)
class EmbeddedModelSpec:
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 130
    mlm_steps: int = 400
    mlm_batch_size: int = 32
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XSTILTS_CACHE", Path.home() / ".cache" / "xstilts"))


def _build_tokenizer(lines: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    words = Counter(word for line in lines for word in line.split())
    characters = sorted({c for word in words for c in word})
    total = sum(words.values())
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0-4 exactly
    vocab = [(s, 0.0) for s in specials]
    vocab += [("\u2581" + w, math.log(c / total)) for w, c in words.most_common()]
    vocab += [("\u2581", -20.0)] + [(c, -25.0) for c in characters]  # unseen words: characters
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=128,
    )


def _pretrain_mlm(model, tokenizer, lines: list[str], spec: EmbeddedModelSpec, log) -> float:
    import torch
    from transformers import DataCollatorForLanguageModeling

    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss_value = float("nan")
    for step in range(spec.mlm_steps):
        batch_lines = rng.sample(lines, spec.mlm_batch_size)
        encoded = tokenizer(batch_lines, truncation=True, max_length=64)
        batch = collator([{"input_ids": ids} for ids in encoded["input_ids"]])
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss_value = float(loss.detach())
        if (step + 1) % 50 == 0:
            log(f"  embedded MLM pre-training step {step + 1}/{spec.mlm_steps}: loss {loss_value:.3f}")
    return loss_value


def ensure_embedded_model(cache_dir: str | os.PathLike | None = None,
                          spec: EmbeddedModelSpec = EmbeddedModelSpec(), log=print) -> str:
    """Build (once) and return the local HF folder of the embedded model.

    Safe to call from several processes at once: a file lock serialises the build, and the
    folder appears by an atomic rename only when complete, so no reader sees half a model.
    """
    from filelock import FileLock

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"tiny-xlmr-{spec.key()}"
    if (target / "config.json").exists():
        return str(target)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return str(target)
        import torch
        from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

        from xstilts.tasks.synthetic import corpus

        started = time.time()
        log(f"building the embedded model (tiny XLM-R, {spec.num_hidden_layers} layers, "
            f"hidden {spec.hidden_size}) in {target} ...")
        lines = corpus(sentences_per_language=2000, seed=spec.seed)
        tokenizer = _build_tokenizer(lines)
        torch.manual_seed(spec.seed)
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
            num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
            intermediate_size=spec.intermediate_size, max_position_embeddings=spec.max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2,
        )
        model = XLMRobertaForMaskedLM(config)
        loss = _pretrain_mlm(model, tokenizer, lines, spec, log)
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=cache))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / "xstilts_embedded.json").write_text(json.dumps({**asdict(spec), "final_mlm_loss": loss}))
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log(f"embedded model ready in {time.time() - started:.1f}s (final MLM loss {loss:.3f})")
    return str(target)


def publish_embedded_model(storage_dir: str, spec: EmbeddedModelSpec = EmbeddedModelSpec(), log=print) -> str:
    """The embedded model's folder under a study's storage (a local path or a URI).

    On a local or mounted storage path it is built there (`ensure_embedded_model`). On an object
    store it is built in this node's temporary cache and published to the bucket (files, then a
    manifest), so every node reads the same model: trials copy it with `storage.to_local`.
    """
    from xstilts.storage import child, is_uri, node_cache_dir, publish, published

    if not is_uri(storage_dir):
        return ensure_embedded_model(storage_dir, spec, log)
    target = child(storage_dir, f"tiny-xlmr-{spec.key()}")
    if not published(target):
        local = ensure_embedded_model(os.path.join(node_cache_dir(), "embedded_models"), spec, log)
        publish(local, target, {"embedded_model": asdict(spec)})
        log(f"embedded model published to {target}")
    return target
