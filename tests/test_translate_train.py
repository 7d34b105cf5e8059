"""translate-train reads each language's own translated training data in XTREME's layout, and a
study that would train a scored language without it is refused at config time (English is never
substituted). Hand-made files in the official formats; no network."""
from __future__ import annotations

import json

import pytest

from xstilts.study.config import ConfigError, parse_config
from xstilts.tasks import DataOptions, TaskDataError, get_task


def _squad(path, context: str, question: str, answer: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": f"{path.stem}-1", "question": question,
         "answers": [{"text": answer, "answer_start": context.index(answer)}]}]}]}]}))


def _raw(tmp_path, data):
    return {"name": "tt", "model": "xlm-roberta-base", "target_tasks": ["xquad"], "intermediate_tasks": ["none"],
            "search_space": {"target_lr": {"type": "choice", "values": [1e-5]},
                             "target_train": {"type": "choice", "values": ["english", "translate_train"]}},
            "data_dir": str(data), "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
            "storage_path": str(tmp_path / "runs")}


def test_qa_translate_train_needs_the_translated_squad(tmp_path):
    data = tmp_path / "data"
    _squad(data / "squad" / "train-v1.1.json", "The cat sat on the mat.", "Where did the cat sit?", "on the mat")
    for language in ("en", "de"):
        _squad(data / "xquad" / f"xquad.{language}.json", "Die Katze sass.", "Wer sass?", "Die Katze")
    with pytest.raises(ConfigError) as refused:
        parse_config(_raw(tmp_path, data))
    message = str(refused.value)
    assert "target xquad, language de" in message and "squad.translate.train.en-de.json" in message
    assert "\n" not in message

    _squad(data / "squad" / "translate-train" / "squad.translate.train.en-de.json", "Die Katze sass auf der Matte.",
           "Wo sass die Katze?", "auf der Matte")
    assert parse_config(_raw(tmp_path, data)).target_train_choices == ("english", "translate_train")
    options = DataOptions(str(data))
    german = get_task("xquad").load("train", "de", options)
    assert [e.answers for e in german] == [("auf der Matte",)]  # the translation, not English SQuAD
    assert get_task("xquad").load("train", "en", options)[0].answers == ("on the mat",)


def test_the_hub_has_no_translated_squad():
    hub = DataOptions()
    for name in ("xquad", "mlqa", "tydiqa"):
        task = get_task(name)
        assert task.has_data("train", "en", hub) and not task.has_data("train", "de" if name != "tydiqa" else "fi", hub)
    assert get_task("xnli").has_data("train", "de", hub)  # XNLI's machine-translated training sets are on the hub
    with pytest.raises(TaskDataError, match="no de training data on the HF hub"):
        get_task("xquad").load("train", "de", hub)  # refused before any download


def test_per_language_needs_each_language_its_own_training_split(tmp_path):
    """`target_train: per_language` (one model per language) is refused like translate_train."""
    data = tmp_path / "data"
    _squad(data / "squad" / "train-v1.1.json", "The cat sat on the mat.", "Where did the cat sit?", "on the mat")
    for language in ("en", "de"):
        _squad(data / "xquad" / f"xquad.{language}.json", "Die Katze sass.", "Wer sass?", "Die Katze")
    raw = _raw(tmp_path, data)
    raw["search_space"]["target_train"]["values"] = ["english", "per_language"]
    with pytest.raises(ConfigError) as refused:
        parse_config(raw)
    assert str(refused.value).startswith("config field 'search_space.target_train': per_language: target xquad, language de")
    assert "squad.translate.train.en-de.json" in str(refused.value)
    _squad(data / "squad" / "translate-train" / "squad.translate.train.en-de.json", "Die Katze sass auf der Matte.",
           "Wo sass die Katze?", "auf der Matte")
    assert parse_config(raw).target_train_choices == ("english", "per_language")
