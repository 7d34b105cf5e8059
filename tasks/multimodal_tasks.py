"""The multimodal targets (kind `multimodal_classification`): IGLUE's XVNLI and MaRVL, read from
IGLUE's files (e-bug/iglue `datasets/`; no hub copy: `data_dir` is required), and their
synthetic counterparts for the embedded default.

Both train on English (XVNLI: SNLI-VE, the English XVNLI training file; MaRVL: NLVR2) and are
evaluated zero-shot on every other language ("dev" is, as for every task here, the labelled
data a language is scored on: XVNLI's and MaRVL's test files, which IGLUE ships with labels).
The region features come from the LMDB stores IGLUE distributes (converted with its
`features_extraction/h5_to_lmdb.py`); every split names its store, and `DataOptions.files`
overrides both: `xvnli:dev:ar` the annotation file, `xvnli_features:dev:ar` the store (also
`xvnli_features:train`, `marvl_features:dev:id`, ...). docs/tasks.md, "Multimodal targets".
"""
from __future__ import annotations

from xstilts.tasks import synthetic
from xstilts.tasks.base import DataOptions, TaskDataError, TaskSpec
from xstilts.tasks.formats import data_error, resolve_files
from xstilts.tasks.iglue import MARVL_LABELS, XVNLI_LABELS, lmdb_spec, read_marvl, read_xvnli

XVNLI_LANGUAGES = ("en", "ar", "es", "fr", "ru")
MARVL_LANGUAGES = ("en", "id", "sw", "ta", "tr", "zh")

_XVNLI_FIX = ("put IGLUE's datasets/ folder (e-bug/iglue: XVNLI/annotations/<lang>/, flickr30k/features/"
              "flickr30k_boxes36.lmdb) under data_dir, SNLI-VE train/dev as XVNLI/annotations/en/{train,dev}.jsonl")
_MARVL_FIX = ("put IGLUE's datasets/ folder (e-bug/iglue: marvl/zero_shot/annotations/, nlvr2/annotations/, and "
              "the LMDB features under marvl/zero_shot/features/ and nlvr2/features/) under data_dir")

# Candidates per (split, English or not), relative to data_dir (IGLUE's datasets/ folder, or a
# data_dir holding it as iglue/: see _under_iglue).
_XVNLI_FILES = {
    ("train", True): ["XVNLI/annotations/en/train.jsonl", "snli_ve/snli_ve_train.jsonl", "snli_ve_train.jsonl"],
    ("dev", True): ["XVNLI/annotations/en/dev.jsonl", "snli_ve/snli_ve_dev.jsonl", "snli_ve_dev.jsonl"],
    ("train", False): ["XVNLI/annotations/{lang}/train.jsonl"],
    ("dev", False): ["XVNLI/annotations/{lang}/test.jsonl"],
}
_XVNLI_STORES = ["flickr30k/features/flickr30k_boxes36.lmdb", "XVNLI/features/flickr30k_boxes36.lmdb",
                 "flickr30k_boxes36.lmdb"]
_MARVL_FILES = {
    ("train", True): ["nlvr2/annotations/train.jsonl"],
    ("dev", True): ["nlvr2/annotations/dev.jsonl"],
    ("train", False): ["marvl/few_shot/annotations/{lang}/train.jsonl"],
    ("dev", False): ["marvl/zero_shot/annotations/marvl-{lang}.jsonl", "marvl/annotations/marvl-{lang}.jsonl"],
}
_MARVL_STORES = {
    ("train", True): ["nlvr2/features/nlvr2-train_boxes36.lmdb"],
    ("dev", True): ["nlvr2/features/nlvr2-dev_boxes36.lmdb"],
    ("train", False): ["marvl/few_shot/features/marvl-few_boxes36.lmdb"],
    ("dev", False): ["marvl/zero_shot/features/marvl-{lang}_boxes36.lmdb", "marvl/features/marvl-{lang}_boxes36.lmdb"],
}


def _under_iglue(candidates: list[str]) -> list[str]:
    """Each candidate as given (data_dir is IGLUE's datasets/ folder), then under data_dir/iglue/
    and data_dir/iglue/datasets/ (a data_dir that also holds the text tasks' folders)."""
    return candidates + [f"iglue/{c}" for c in candidates] + [f"iglue/datasets/{c}" for c in candidates]


def _local(task: str, options: DataOptions, split: str, language: str) -> None:
    if options.data_dir is None and options.file_override(task, split, language) is None:
        raise TaskDataError(f"{task}: IGLUE's data is not on the HF hub; fix: set data_dir to IGLUE's datasets/ folder "
                            "(or map the files with DataOptions.files / data_files); see docs/tasks.md")


def _files(task: str, annotations: dict, stores, fix: str):
    """(locate, store) for one task: `locate` returns the annotation file and checks the feature
    store exists; `store` returns the store's path."""

    def store(split: str, language: str, options: DataOptions) -> str:
        english = language == "en"
        candidates = stores[(split, english)] if isinstance(stores, dict) else stores
        return resolve_files(f"{task}_features", split, language, options, _under_iglue(candidates), fix)[0]

    def locate(split: str, language: str, options: DataOptions) -> tuple[str, ...]:
        _local(task, options, split, language)
        found = resolve_files(task, split, language, options, _under_iglue(annotations[(split, language == "en")]), fix)
        store(split, language, options)  # a missing store is as fatal as a missing file
        return found[:1]

    return locate, store


_xvnli_locate, _xvnli_store = _files("xvnli", _XVNLI_FILES, _XVNLI_STORES, _XVNLI_FIX)
_marvl_locate, _marvl_store = _files("marvl", _MARVL_FILES, _MARVL_STORES, _MARVL_FIX)


def _loader(locate, store, read):
    def load(split: str, language: str, options: DataOptions) -> list:
        (path,) = locate(split, language, options)
        examples = read(path, lmdb_spec(store(split, language, options)))
        if not examples:
            raise data_error(path, None, "no labelled records", "use a file with labelled records")
        return examples

    return load


XVNLI = TaskSpec(
    name="xvnli", kind="multimodal_classification", languages=XVNLI_LANGUAGES, labels=XVNLI_LABELS,
    metric="accuracy", loader=_loader(_xvnli_locate, _xvnli_store, read_xvnli), max_length=80,
    locate=_xvnli_locate, translated_train_on_hub=False,
    description="IGLUE XVNLI: cross-lingual visual NLI (Flickr30k images; English training data SNLI-VE).",
)
MARVL = TaskSpec(
    name="marvl", kind="multimodal_classification", languages=MARVL_LANGUAGES, labels=MARVL_LABELS,
    metric="accuracy", loader=_loader(_marvl_locate, _marvl_store, read_marvl), max_length=80,
    locate=_marvl_locate, translated_train_on_hub=False,
    description="IGLUE MaRVL: multicultural reasoning over image pairs (English training data NLVR2).",
)
SYNTHETIC_XVNLI = TaskSpec(
    name="synthetic_xvnli", kind="multimodal_classification", languages=synthetic.LANGUAGES, labels=XVNLI_LABELS,
    metric="accuracy", loader=synthetic.synthetic_multimodal_loader("visual_nli", "xvnli"), max_length=64,
    description="Synthetic XVNLI-like visual NLI (region features of synthetic scenes; hypotheses in the 4 "
                "synthetic languages): the embedded default's multimodal target.",
)
SYNTHETIC_MARVL = TaskSpec(
    name="synthetic_marvl", kind="multimodal_classification", languages=synthetic.LANGUAGES, labels=MARVL_LABELS,
    metric="accuracy", loader=synthetic.synthetic_multimodal_loader("visual_reasoning", "marvl"), max_length=64,
    description="Synthetic MaRVL-like reasoning over an image pair (true/false statements in the 4 synthetic languages).",
)

MULTIMODAL_TASKS = [SYNTHETIC_XVNLI, SYNTHETIC_MARVL, XVNLI, MARVL]
