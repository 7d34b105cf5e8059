"""IGLUE's multimodal formats (XVNLI / SNLI-VE, MaRVL / NLVR2, the LMDB region-feature stores),
the multimodal_classification kind and its model, without Ray.

The fixture writes a small copy of IGLUE's `datasets/` layout: annotation lines written by hand
in each file's real format (fields as in e-bug/iglue's files) and LMDB feature stores written
here with the `lmdb` package the way volta's and IGLUE's converters do (one pickled dict per
image id: base64 float32 `features` / `boxes` and string sizes as volta's TSV conversion writes
them, or numpy arrays as IGLUE's h5_to_lmdb.py does; plus the pickled `keys` list). Expected
regions are computed here independently of the loader.
"""
from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch

from xstilts.tasks import DataOptions, TaskDataError, get_task
from xstilts.tasks.iglue import StoreSpec, open_store, read_marvl, read_xvnli
from xstilts.tasks.modeling import collate, encode, evaluate, load_model_for_task

D = 2048


def _image(seed: int, boxes: int, h: int = 300, w: int = 400) -> tuple[np.ndarray, np.ndarray, int, int]:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 1, (boxes, 2, 2))
    low, high = corners.min(1), corners.max(1)
    xyxy = (np.concatenate([low, high], 1) * [w, h, w, h]).astype(np.float32)
    return rng.uniform(0, 2, (boxes, D)).astype(np.float32), xyxy, h, w


def _volta_value(features, boxes, h, w, image_id):  # volta's convert_*_lmdb.py: the TSV row as strings
    return {"img_id": image_id, "img_h": str(h), "img_w": str(w), "num_boxes": str(len(boxes)),
            "boxes": base64.b64encode(boxes.tobytes()), "features": base64.b64encode(features.tobytes())}


def _h5_value(features, boxes, h, w, image_id):  # iglue's h5_to_lmdb.py: the H5 datasets as numpy values
    return {"img_id": image_id, "img_h": np.int64(h), "img_w": np.int64(w), "num_boxes": np.int64(len(boxes)),
            "boxes": boxes, "features": features}


def _write_lmdb(path: Path, values: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key.encode(), value if isinstance(value, bytes) else pickle.dumps(value))
        txn.put(b"keys", pickle.dumps([k.encode() for k in values]))
    env.close()


def _write(root: Path, relative: str, lines: list) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
                            for line in lines), encoding="utf-8")
    return path


IMAGES = {"759822302": _image(1, 3), "1000092795": _image(2, 40), "36979": _image(3, 5),
          "39-0": _image(4, 4), "39-11": _image(5, 6), "dev-850-0-img0": _image(6, 2), "dev-850-0-img1": _image(7, 3)}


def _ve(label, hypothesis, image, n):
    return {"gold_label": label, "sentence1": "A man in a blue collared shirt stands by a person.", "sentence2": hypothesis,
            "captionID": f"{image}.jpg#2", "pairID": f"{image}.jpg#2r{n}", "Flikr30kID": image}


@pytest.fixture(scope="module")
def iglue(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iglue") / "datasets"
    flickr = {k: IMAGES[k] for k in ("759822302", "1000092795", "36979")}
    values = {k: (_h5_value if k == "36979" else _volta_value)(*v, k) for k, v in flickr.items()}
    _write_lmdb(root / "flickr30k/features/flickr30k_boxes36.lmdb", values)
    _write(root, "XVNLI/annotations/en/train.jsonl", [
        _ve("contradiction", "He wears the newspaper on his head.", "759822302", "1c"),
        _ve("-", "He is reading.", "759822302", "1n"),  # no consensus: left out
        _ve("entailment", "A man stands.", "1000092795", "1e"),
        _ve("neutral", "The man is waiting for a bus.", "36979.jpg", "1n")])
    _write(root, "XVNLI/annotations/en/dev.jsonl", [_ve("entailment", "Someone is outside.", "36979", "2e")])
    _write(root, "XVNLI/annotations/ar/test.jsonl", [
        _ve("contradiction", "يرتدي الجريدة على رأسه.", "759822302", "1c"), _ve("neutral", "يقرأ الصحيفة.", "759822302", "1n")])
    marvl = {k: _volta_value(*IMAGES[k], k) for k in ("39-0", "39-11")}
    _write_lmdb(root / "marvl/zero_shot/features/marvl-id_boxes36.lmdb", marvl)
    record = {"concept": "39-Panci", "language": "id", "caption": "Panci di salah satu foto berada di atas kompor.",
              "left_img": "39-0.jpg", "right_img": "39-11.jpg",
              "annotator_info": {"annotator_id": "id_01", "age": 31}, "chapter": "Basic actions and technology"}
    _write(root, "marvl/zero_shot/annotations/marvl-id.jsonl",
           [{**record, "id": "id-0", "label": True},
            {**record, "id": "id-1", "label": False, "left_img": "39-11.jpg", "right_img": "39-0.jpg"}])
    nlvr = {k: _volta_value(*IMAGES[k], k) for k in ("dev-850-0-img0", "dev-850-0-img1")}
    _write_lmdb(root / "nlvr2/features/nlvr2-dev_boxes36.lmdb", nlvr)
    _write(root, "nlvr2/annotations/dev.jsonl", [
        {"validation": {"61": "False"}, "sentence": "The right image shows a curving walkway.", "writer": "61",
         "label": "False", "synset": "beer bottle", "query": "some beer bottles38", "identifier": "dev-850-0-0"},
        {"sentence": "The left image shows bottles.", "label": "True", "identifier": "dev-850-0-1"}])
    return root


def _expected_regions(features, boxes, h, w, cap=37):
    """volta's ImageFeaturesH5Reader with add_global_imgfeat="first", num_locs=5, then the cap."""
    area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 2] - boxes[:, 0]) / (w * h)
    locations = np.column_stack([boxes[:, 0] / w, boxes[:, 1] / h, boxes[:, 2] / w, boxes[:, 3] / h, area])
    features = np.vstack([features.sum(0) / len(features), features])
    locations = np.vstack([[0, 0, 1, 1, 1], locations])
    return features[:cap], locations[:cap]


def test_xvnli_reads_the_iglue_files(iglue):
    task, options = get_task("xvnli"), DataOptions(str(iglue))
    train = task.load("train", "en", options)
    assert [(e.text, e.image_ids, e.label) for e in train] == [
        ("He wears the newspaper on his head.", ("759822302",), "contradiction"),
        ("A man stands.", ("1000092795",), "entailment"),
        ("The man is waiting for a bus.", ("36979",), "neutral")]
    assert train[0].id == "759822302.jpg#2r1c"
    assert [e.label for e in task.load("dev", "ar", options)] == ["contradiction", "neutral"]
    assert [e.text for e in task.load("dev", "en", options)] == ["Someone is outside."]
    assert task.has_data("dev", "ar", options) and not task.has_data("dev", "es", options)
    assert not task.has_data("train", "en", DataOptions())  # not on the hub


def test_marvl_and_nlvr2_records(iglue):
    task, options = get_task("marvl"), DataOptions(str(iglue))
    marvl = task.load("dev", "id", options)
    assert [(e.image_ids, e.label, e.id) for e in marvl] == [(("39-0", "39-11"), "true", "id-0"),
                                                             (("39-11", "39-0"), "false", "id-1")]
    nlvr = task.load("dev", "en", options)
    assert [(e.text, e.image_ids, e.label) for e in nlvr] == [
        ("The right image shows a curving walkway.", ("dev-850-0-img0", "dev-850-0-img1"), "false"),
        ("The left image shows bottles.", ("dev-850-0-img0", "dev-850-0-img1"), "true")]


@pytest.mark.parametrize("image", ["759822302", "1000092795", "36979"])
def test_regions_are_volta_s(iglue, image):
    """Boxes over the image size, the area, the mean global region first, at most 37 (the 40-box
    image is capped); base64 (volta) and numpy (h5_to_lmdb) values read the same way."""
    (example,) = [e for e in get_task("xvnli").load("train", "en", DataOptions(str(iglue))) if e.image_ids == (image,)]
    features, locations = open_store(example.store).regions(image)
    expected_features, expected_locations = _expected_regions(*IMAGES[image])
    assert features.shape == (min(len(IMAGES[image][1]) + 1, 37), D)
    np.testing.assert_allclose(features, expected_features, rtol=1e-5)
    np.testing.assert_allclose(locations, expected_locations, rtol=1e-5, atol=1e-6)


def test_the_store_is_read_lazily(tmp_path):
    """Only the images asked for are decoded: a malformed value elsewhere in the store is never
    touched (a reader that loads the whole store would fail on it)."""
    store = tmp_path / "features.lmdb"
    _write_lmdb(store, {"1": _volta_value(*_image(1, 2), "1"), "2": b"\x80\x04not a pickle at all"})
    _write(tmp_path, "test.jsonl", [_ve("entailment", "A dog runs.", "1", "1e")])
    spec = StoreSpec("lmdb", str(store)).to_string()
    (example,) = read_xvnli(str(tmp_path / "test.jsonl"), spec)
    assert open_store(spec).regions("1")[0].shape == (3, D)
    with pytest.raises(TaskDataError, match=r"image '2': malformed value"):
        open_store(spec).regions("2")


def _error(call) -> str:
    with pytest.raises(TaskDataError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "fix: " in message, message
    return message


def test_malformed_records_name_file_and_line(tmp_path, iglue):
    spec = StoreSpec("lmdb", str(iglue / "flickr30k/features/flickr30k_boxes36.lmdb")).to_string()
    ok = _ve("entailment", "A man.", "759822302", "1e")
    cases = [
        ([ok, "{not json"], read_xvnli, r"line 2: bad JSON"),
        ([ok, ok, {k: v for k, v in ok.items() if k != "sentence2"}], read_xvnli, r"line 3: missing field\(s\) sentence2"),
        ([{**ok, "gold_label": "yes"}], read_xvnli, r"line 1: unknown gold_label 'yes'"),
        ([ok, {**ok, "Flikr30kID": "404404"}], read_xvnli, r"line 2: image '404404' has no features in the store"),
        ([{"caption": "x", "left_img": "39-0.jpg", "right_img": "39-11.jpg", "label": "maybe"}], read_marvl,
         r"line 1: unknown label 'maybe'"),
        ([{"sentence": "x", "label": "True"}], read_marvl, r"line 1: missing field\(s\) identifier"),
        ([{"text": "x"}], read_marvl, r"line 1: neither a MaRVL record"),
    ]
    for n, (lines, read, pattern) in enumerate(cases):
        path = _write(tmp_path, f"case{n}.jsonl", lines)
        store = spec if read is read_xvnli else StoreSpec("lmdb", str(iglue / "marvl/zero_shot/features/marvl-id_boxes36.lmdb")).to_string()
        message = _error(lambda: read(str(path), store))
        assert message.startswith(f"{path}: ") and __import__("re").search(pattern, message), message


def test_store_errors(tmp_path, iglue):
    options = DataOptions(str(iglue), files={"xvnli_features:dev:ar": str(tmp_path / "absent.lmdb")})
    assert "absent.lmdb: file not found" in _error(lambda: get_task("xvnli").load("dev", "ar", options))
    assert "set data_dir to IGLUE's datasets/ folder" in _error(lambda: get_task("xvnli").load("dev", "ar", DataOptions()))
    store = tmp_path / "bad.lmdb"

    class Evil:  # a pickle that would run code when loaded (os.system: never patched, unlike print under Ray)
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    _write_lmdb(store, {"1": {"img_h": "10", "img_w": "10", "boxes": "AAAA"}, "2": Evil()})
    spec = StoreSpec("lmdb", str(store)).to_string()
    assert "image '1': malformed value (the value lacks features)" in _error(lambda: open_store(spec).regions("1"))
    assert f"{os.system.__module__}.system, which a feature store may not hold" in _error(lambda: open_store(spec).regions("2"))
    assert "image '9' has no features" in _error(lambda: open_store(spec).regions("9"))
    # the override points the dev split at another store: read from there
    moved = DataOptions(str(iglue), files={"xvnli_features:dev:ar": str(iglue / "flickr30k/features/flickr30k_boxes36.lmdb")})
    assert len(get_task("xvnli").load("dev", "ar", moved)) == 2


def test_synthetic_scenes_are_shared_by_languages():
    task = get_task("synthetic_xvnli")
    en, far = (task.load("dev", lang, DataOptions(max_examples=30)) for lang in ("en", "far"))
    assert [(e.image_ids, e.label) for e in en] == [(e.image_ids, e.label) for e in far]
    assert en[0].text != far[0].text and {e.label for e in en} == {"entailment", "neutral", "contradiction"}
    store = open_store(en[0].store)
    first, again = store.regions(en[0].image_ids[0]), store.regions(en[0].image_ids[0])
    assert first[0].shape[1] == D and np.array_equal(first[0], again[0]) and (first[1][:, :4] <= 1).all()
    assert {len(e.image_ids) for e in get_task("synthetic_marvl").load("train", "en", DataOptions(max_examples=5))} == {2}


def test_model_fuses_regions_trains_saves_and_loads(iglue, tokenizer_dir, tmp_path, one_thread):
    """Single-stream fusion on a tiny XLM-R: an image pair's regions come in as tokens of two image
    slots; masked regions leave the text exactly as the encoder alone sees it (positions kept);
    the regions change the output; a few steps lower the loss; save/load round-trips; the feature
    cache stores the features."""
    from transformers import AutoTokenizer

    from xstilts.trainables.feature_cache import FeatureCache

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    task, options = get_task("marvl"), DataOptions(str(iglue))
    examples = task.load("dev", "id", options) + task.load("dev", "en", options)
    features = encode(task, examples, tokenizer)
    batch = collate(features, tokenizer.pad_token_id)
    assert batch["region_features"].shape == (4, 5 + 7, D)  # 39-0: 4 boxes + the global region; 39-11: 6 + 1
    assert batch["region_images"][0].tolist() == [0] * 5 + [1] * 7 and batch["region_mask"][0].sum() == 12
    model = load_model_for_task(task, tokenizer_dir)
    model.eval()
    with torch.no_grad():
        masked = {**batch, "region_mask": torch.zeros_like(batch["region_mask"])}
        text_only = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[:, 0]
        expected = model.out_proj(torch.tanh(model.dense(text_only)))
        torch.testing.assert_close(model(**masked).logits, expected, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        before = float(model(**batch).loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(10):
        model.train()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        assert float(model(**batch).loss) < before
        # the image matters: the same text with and without its regions
        assert (model(**batch).logits - model(**masked).logits).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "saved")
    assert {"config.json", "multimodal.json", "multimodal_head.safetensors"} <= {p.name for p in (tmp_path / "saved").iterdir()}
    again = load_model_for_task(task, str(tmp_path / "saved"))
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits)
    assert again.config.id2label == {0: "false", 1: "true"}
    assert evaluate(task, again, tokenizer, examples)["accuracy"] in (0.0, 25.0, 50.0, 75.0, 100.0)
    cache = FeatureCache(tmp_path / "cache")
    assert cache.store("k", features) and cache.load("k") == features
