"""IGLUE's multimodal formats: the XVNLI / SNLI-VE and MaRVL / NLVR2 annotation files and the
image-region feature store (an LMDB keyed by image id), as e-bug/iglue and e-bug/volta write and
read them.

Annotations (JSON lines; every problem is a `TaskDataError` naming the file and line):
- XVNLI and SNLI-VE (`XVNLI/annotations/<lang>/test.jsonl`, `snli_ve_{train,dev,test}.jsonl`):
  `gold_label` (contradiction / neutral / entailment; "-", no annotator consensus, is left out),
  `sentence1` (the Flickr30k caption: not a model input, the image is the premise), `sentence2`
  (the hypothesis: the text the model reads, as in volta), `captionID`, `pairID`, `Flikr30kID`
  (sic; the image id is its part before any ".", volta's `int(id.split(".")[0])`).
- MaRVL (`marvl-<lang>.jsonl`): `concept`, `language`, `caption` (the statement), `left_img`,
  `right_img` (file names: the image ids are their base names without extension, as in volta),
  `label` (JSON true / false), `id`, ... NLVR2 (the English training data) is read in its own
  release format too: `sentence`, `label` ("True" / "False"), `identifier` ("dev-850-0-0": the
  images are "dev-850-0-img0" and "dev-850-0-img1", volta's rule).

The feature store is a folder holding an LMDB environment (volta's `convert_*_lmdb.py`, IGLUE's
`features_extraction/h5_to_lmdb.py`): one entry per image, key = the image id (UTF-8), value =
a pickled dict with `img_h`, `img_w` (numbers or their strings), `features` (float32, N x D:
base64 of the raw bytes, or a numpy array) and `boxes` (float32, N x 4 pixel corners x1 y1 x2
y2, same encodings); an entry `keys` holds the pickled list of all ids. It is opened read-only
and read one image at a time (`FeatureStore.regions`), never loaded whole. Values are unpickled
with a restricted unpickler that accepts plain containers, strings, numbers and numpy arrays
only (a pickle can otherwise run code).

Each image becomes regions as volta's `ImageFeaturesH5Reader` makes them: boxes divided by the
image width/height, a fifth location coordinate for the box area relative to the image, an
optional "global" region first (the mean of the features, location [0, 0, 1, 1, 1]), and at most
`max_regions` regions in all (37 = 36 boxes + the global one, as in volta's IGLUE configs).

A store is named in features by a `StoreSpec` string (JSON) so that batches, which may be built
in another process than the one that loaded the data (a Ray Train worker), reopen it by path;
`open_store` keeps one open reader per spec and process. The synthetic tasks' spec names the
generator of `xstilts.tasks.synthetic` instead of a path.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import os
import pickle
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from xstilts.tasks.base import TaskDataError
from xstilts.tasks.formats import data_error, read_jsonl

FEATURE_DIM = 2048  # IGLUE's region features (ResNet-101 / ResNeXt-101 Faster R-CNN pool features)
BOX_DIM = 5  # x1/w, y1/h, x2/w, y2/h, area / (w * h)
MAX_REGIONS = 37  # volta's IGLUE configs: 36 boxes + the global region
KEYS_ENTRY = "keys"

XVNLI_LABELS = ("entailment", "neutral", "contradiction")
MARVL_LABELS = ("false", "true")
NO_CONSENSUS = "-"

_XVNLI_FIX = ('give XVNLI / SNLI-VE JSON lines: {"gold_label": "entailment"|"neutral"|"contradiction"|"-", '
              '"sentence1", "sentence2", "captionID", "pairID", "Flikr30kID"} (e-bug/iglue datasets/XVNLI)')
_MARVL_FIX = ('give MaRVL JSON lines {"concept", "language", "caption", "left_img", "right_img", "label": true|false, '
              '"id"} (e-bug/iglue datasets/marvl) or NLVR2 lines {"sentence", "label": "True"|"False", "identifier"}')
_STORE_FIX = ("convert the IGLUE features to volta's LMDB layout (iglue features_extraction/h5_to_lmdb.py or "
              "npy_to_lmdb.py): one pickled dict {img_h, img_w, features, boxes} per image id, plus 'keys'")


@dataclass(frozen=True)
class MultimodalExample:
    """Text about one or more images (XVNLI: a hypothesis about one image; MaRVL: a statement
    about a left and a right image), its label, and where the images' region features are
    (`store`: a `StoreSpec` string). `id` is the record's id in its file (pairID, id, identifier)."""

    text: str
    image_ids: tuple[str, ...]
    label: str
    store: str
    id: str = ""


# ---------------------------------------------------------------------------------------------
# Annotation files
# ---------------------------------------------------------------------------------------------

def _require(path: str, line: int, record: dict, keys: Sequence[str], fix: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise data_error(path, line, f"missing field(s) {', '.join(missing)}", fix)


def _text(path: str, line: int, record: dict, key: str, fix: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise data_error(path, line, f"field {key} must be a non-empty string, found {value!r:.60}", fix)
    return value


def _image_id(path: str, line: int, value: Any, field: str, fix: str) -> str:
    """An image id from a file name or id: its base name up to the first "." ("39-0.jpg" -> "39-0";
    "759822302" -> "759822302")."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise data_error(path, line, f"field {field} must name an image, found {value!r:.60}", fix)
    name = os.path.basename(str(value).strip().replace("\\", "/")).split(".")[0]
    if not name:
        raise data_error(path, line, f"field {field} must name an image, found {value!r:.60}", fix)
    return name


def read_xvnli(path: str, store: str, check: bool = True) -> list[MultimodalExample]:
    """XVNLI / SNLI-VE JSON lines: (hypothesis, [Flickr30k image id], label); "-" records left out.
    With `check`, every image must have features in `store` (`check_images`)."""
    examples, lines = [], []
    for line, record in read_jsonl(path, _XVNLI_FIX):
        _require(path, line, record, ("gold_label", "sentence2", "Flikr30kID"), _XVNLI_FIX)
        label = record["gold_label"]
        if label == NO_CONSENSUS:
            continue
        if label not in XVNLI_LABELS:
            raise data_error(path, line, f"unknown gold_label {label!r:.60}; expected one of "
                             f"{', '.join(XVNLI_LABELS)} or '-'", _XVNLI_FIX)
        image = _image_id(path, line, record["Flikr30kID"], "Flikr30kID", _XVNLI_FIX)
        examples.append(MultimodalExample(_text(path, line, record, "sentence2", _XVNLI_FIX), (image,), label, store,
                                          str(record.get("pairID", line))))
        lines.append(line)
    if check:
        check_images(path, examples, lines)
    return examples


def _marvl_label(path: str, line: int, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in MARVL_LABELS:
        return value.strip().lower()
    if type(value) is int and value in (0, 1):
        return MARVL_LABELS[value]
    raise data_error(path, line, f"unknown label {value!r:.60}; expected true or false", _MARVL_FIX)


def read_marvl(path: str, store: str, check: bool = True) -> list[MultimodalExample]:
    """MaRVL (or NLVR2) JSON lines: (statement, [left image, right image], "true" / "false"); with
    `check`, every image must have features in `store` (`check_images`)."""
    examples, lines = [], []
    for line, record in read_jsonl(path, _MARVL_FIX):
        if "caption" in record or "left_img" in record:  # MaRVL
            _require(path, line, record, ("caption", "left_img", "right_img", "label"), _MARVL_FIX)
            text = _text(path, line, record, "caption", _MARVL_FIX)
            images = (_image_id(path, line, record["left_img"], "left_img", _MARVL_FIX),
                      _image_id(path, line, record["right_img"], "right_img", _MARVL_FIX))
            example_id = str(record.get("id", line))
        elif "identifier" in record or "sentence" in record:  # NLVR2's release format
            _require(path, line, record, ("sentence", "identifier", "label"), _MARVL_FIX)
            text = _text(path, line, record, "sentence", _MARVL_FIX)
            identifier = record["identifier"]
            if not isinstance(identifier, str) or identifier.count("-") < 1:
                raise data_error(path, line, f"identifier {identifier!r:.60} is not NLVR2's <split>-<set>-<pair>-<n>",
                                 _MARVL_FIX)
            stem = identifier.rsplit("-", 1)[0]
            images, example_id = (f"{stem}-img0", f"{stem}-img1"), identifier
        else:
            raise data_error(path, line, "neither a MaRVL record (caption, left_img, right_img) nor an NLVR2 "
                             "record (sentence, identifier)", _MARVL_FIX)
        examples.append(MultimodalExample(text, images, _marvl_label(path, line, record["label"]), store, example_id))
        lines.append(line)
    if check:
        check_images(path, examples, lines)
    return examples


def check_images(path: str, examples: list[MultimodalExample], lines: Sequence[int]) -> None:
    """Every image the examples name has features in its store: the first that has none is a
    TaskDataError naming the annotation file, the record's line and the image id."""
    if not examples:
        return
    store = open_store(examples[0].store)
    missing = store.missing({image for e in examples for image in e.image_ids})
    if not missing:
        return
    for line, example in zip(lines, examples):
        absent = [image for image in example.image_ids if image in missing]
        if absent:
            raise data_error(path, line, f"image {absent[0]!r} has no features in the store {store.name} "
                             f"({len(missing)} image(s) of this file missing in all)",
                             "point the task at the feature store of this split (docs/tasks.md, 'Multimodal "
                             "targets') or extract features for the missing images")


# ---------------------------------------------------------------------------------------------
# Feature stores
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoreSpec:
    """Where an example's region features come from, as a string features can carry.

    kind: "lmdb" (`path`: the LMDB folder) or "synthetic" (`path`: the generator's name).
    max_regions: regions per image at most (the global one included); global_region: prepend the
    mean of the features as a region covering the whole image."""

    kind: str
    path: str
    max_regions: int = MAX_REGIONS
    global_region: bool = True

    def to_string(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_string(cls, text: str) -> "StoreSpec":
        try:
            spec = cls(**json.loads(text))
        except (TypeError, ValueError) as error:
            raise ValueError(f"not a feature-store spec: {text!r:.80} ({error})") from None
        if spec.kind not in ("lmdb", "synthetic") or spec.max_regions < 1:
            raise ValueError(f"bad feature-store spec {text!r:.80}: kind must be lmdb or synthetic, max_regions >= 1")
        return spec


def lmdb_spec(path: str, max_regions: int = MAX_REGIONS, global_region: bool = True) -> str:
    return StoreSpec("lmdb", os.path.abspath(path), max_regions, global_region).to_string()


def prepare_regions(features: np.ndarray, boxes: np.ndarray, image_h: float, image_w: float,
                    max_regions: int = MAX_REGIONS, global_region: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(features [n, D] float32, locations [n, 5] float32) of one image, volta's way: boxes over
    the image size, their area over the image area, the mean "global" region first, capped."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    features = np.asarray(features, dtype=np.float32).reshape(len(boxes), -1)
    width, height = float(image_w), float(image_h)
    locations = np.zeros((len(boxes), BOX_DIM), dtype=np.float32)
    locations[:, 4] = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0]) / (width * height)
    locations[:, 0], locations[:, 2] = boxes[:, 0] / width, boxes[:, 2] / width
    locations[:, 1], locations[:, 3] = boxes[:, 1] / height, boxes[:, 3] / height
    if global_region and len(features):
        features = np.concatenate([features.mean(axis=0, keepdims=True), features], axis=0)
        locations = np.concatenate([np.array([[0, 0, 1, 1, 1]], dtype=np.float32), locations], axis=0)
    return np.ascontiguousarray(features[:max_regions]), np.ascontiguousarray(locations[:max_regions])


class _RestrictedUnpickler(pickle.Unpickler):
    """Plain containers, strings, numbers and numpy arrays only: a store's values are unpickled,
    and a crafted pickle could otherwise run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED or (module == "numpy" and name.endswith("Dtype")) or \
                (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the value pickles {module}.{name}, which a feature store may not hold")


def _unpickle(data: bytes) -> Any:
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def _array(value: Any, what: str) -> np.ndarray:
    """A float32 array from base64 of its bytes (str or bytes) or from a numpy array."""
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False).reshape(-1)
    if isinstance(value, (str, bytes)):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} is not base64") from None
        if len(raw) % 4:
            raise ValueError(f"{what} holds {len(raw)} bytes, not a whole number of float32 values")
        return np.frombuffer(raw, dtype=np.float32)
    raise ValueError(f"{what} is a {type(value).__name__}, expected base64 float32 bytes or a numpy array")


def decode_record(value: dict) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(features [N, D], boxes [N, 4], img_h, img_w) of one unpickled store value."""
    if not isinstance(value, dict):
        raise ValueError(f"the value is a {type(value).__name__}, expected a dict")
    value = {k.decode() if isinstance(k, bytes) else k: v for k, v in value.items()}
    missing = [k for k in ("img_h", "img_w", "features", "boxes") if k not in value]
    if missing:
        raise ValueError(f"the value lacks {', '.join(missing)}")
    try:
        image_h, image_w = float(value["img_h"]), float(value["img_w"])
    except (TypeError, ValueError):
        raise ValueError(f"img_h / img_w must be numbers, found {value['img_h']!r:.30} / {value['img_w']!r:.30}") from None
    if not (image_h > 0 and image_w > 0):
        raise ValueError(f"img_h / img_w must be > 0, found {image_h:g} / {image_w:g}")
    boxes = _array(value["boxes"], "boxes")
    if boxes.size % 4:
        raise ValueError(f"boxes hold {boxes.size} values, not N x 4")
    boxes = boxes.reshape(-1, 4)
    features = _array(value["features"], "features")
    if len(boxes) == 0 or features.size % len(boxes):
        raise ValueError(f"features hold {features.size} values for {len(boxes)} boxes, not N x D")
    features = features.reshape(len(boxes), -1)
    if not (np.isfinite(features).all() and np.isfinite(boxes).all()):
        raise ValueError("features or boxes hold NaN or infinite values")
    return features, boxes, image_h, image_w


class FeatureStore:
    """One LMDB feature store, opened read-only; images are read one at a time, on demand."""

    def __init__(self, spec: StoreSpec):
        import lmdb

        self.spec, self.name = spec, spec.path
        if not os.path.exists(spec.path):
            raise TaskDataError(f"{spec.path}: feature store not found; fix: {_STORE_FIX}")
        try:
            self.env = lmdb.open(spec.path, subdir=os.path.isdir(spec.path), readonly=True, lock=False,
                                 readahead=False, meminit=False, max_readers=512)
        except lmdb.Error as error:
            raise TaskDataError(f"{spec.path}: not an LMDB feature store ({str(error).splitlines()[0]}); "
                                f"fix: {_STORE_FIX}") from None
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def keys(self) -> list[str]:
        """The ids the store's `keys` entry lists."""
        with self.env.begin(buffers=False) as txn:
            raw = txn.get(KEYS_ENTRY.encode())
        if raw is None:
            raise TaskDataError(f"{self.name}: no '{KEYS_ENTRY}' entry; fix: {_STORE_FIX}")
        try:
            keys = _unpickle(raw)
        except Exception as error:  # noqa: BLE001 - any undecodable entry is one clear error
            raise TaskDataError(f"{self.name}: the '{KEYS_ENTRY}' entry is not a pickled list ({error}); "
                                f"fix: {_STORE_FIX}") from None
        return [k.decode() if isinstance(k, bytes) else str(k) for k in keys]

    def missing(self, image_ids) -> set[str]:
        """The ids among `image_ids` without an entry (looked up, values not read)."""
        absent = set()
        with self.env.begin(buffers=True) as txn:
            cursor = txn.cursor()
            for image in image_ids:
                if image == KEYS_ENTRY or not cursor.set_key(image.encode()):
                    absent.add(image)
        return absent

    def raw(self, image_id: str) -> tuple[np.ndarray, np.ndarray, float, float]:
        with self.env.begin(buffers=False) as txn:
            data = txn.get(image_id.encode()) if image_id != KEYS_ENTRY else None
        if data is None:
            raise TaskDataError(f"{self.name}: image {image_id!r} has no features in the store; "
                                f"fix: use the store that holds this split's images, or extract its features")
        try:
            return decode_record(_unpickle(data))
        except Exception as error:  # noqa: BLE001 - one message for every malformed value
            raise TaskDataError(f"{self.name}: image {image_id!r}: malformed value ({str(error).splitlines()[0]}); "
                                f"fix: {_STORE_FIX}") from None

    def regions(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(features [n, D], locations [n, 5]) of one image, prepared as `prepare_regions` says
        (a small per-process cache keeps the last images decoded)."""
        cached = self._cache.get(image_id)
        if cached is not None:
            self._cache.move_to_end(image_id)
            return cached
        features, boxes, image_h, image_w = self.raw(image_id)
        prepared = prepare_regions(features, boxes, image_h, image_w, self.spec.max_regions, self.spec.global_region)
        self._cache[image_id] = prepared
        if len(self._cache) > _CACHED_IMAGES:
            self._cache.popitem(last=False)
        return prepared


_CACHED_IMAGES = 512
_OPEN: dict[tuple[int, str], Any] = {}


def open_store(spec: str):
    """The reader of a store spec string, one per spec and process (an LMDB handle is not shared
    across processes): a `FeatureStore`, or the synthetic generator's store."""
    key = (os.getpid(), spec)
    store = _OPEN.get(key)
    if store is None:
        parsed = StoreSpec.from_string(spec)
        if parsed.kind == "synthetic":
            from xstilts.tasks.synthetic import SyntheticImageStore

            store = SyntheticImageStore(parsed)
        else:
            store = FeatureStore(parsed)
        _OPEN[key] = store
    return store


def write_store(path: str, images: dict[str, dict], map_size: int = 1 << 30) -> str:
    """Write `images` ({id: value dict}) as a volta/IGLUE LMDB store at `path` (with the `keys`
    entry): for tests and for converting small feature sets. Returns the path."""
    import lmdb

    env = lmdb.open(path, map_size=map_size)
    try:
        with env.begin(write=True) as txn:
            for image, value in images.items():
                txn.put(image.encode(), pickle.dumps(value))
            txn.put(KEYS_ENTRY.encode(), pickle.dumps([image.encode() for image in images]))
    finally:
        env.close()
    return path


def encode_image(features: np.ndarray, boxes: np.ndarray, image_h: int, image_w: int, image_id: str = "") -> dict:
    """One store value in IGLUE's layout (base64 float32, sizes as strings, as volta's TSV
    conversion writes them)."""
    features = np.asarray(features, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    return {"img_id": image_id, "img_h": str(image_h), "img_w": str(image_w), "num_boxes": str(len(boxes)),
            "features": base64.b64encode(features.tobytes()).decode("ascii"),
            "boxes": base64.b64encode(boxes.tobytes()).decode("ascii")}
