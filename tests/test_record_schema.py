"""The record names are built in one place (xstilts.tasks.record_schema), and the final means once."""
from __future__ import annotations

import pytest

from xstilts.tasks.record_schema import (FINAL_ALL_LANGUAGES, FINAL_CHANCE_PREFIX, FINAL_DEV_PREFIX, FINAL_EN_DEV,
                                 FINAL_PREFIX, FINAL_ZERO_SHOT, final_chance, final_dev, summarize_final)


def test_key_builders_match_the_prefixes_readers_parse():
    assert final_dev("sw", "accuracy") == "final/dev/sw/accuracy" and final_dev("sw", "f1").startswith(FINAL_DEV_PREFIX)
    assert final_chance("sw", "f1") == "final/chance/sw/f1" and final_chance("x", "y").startswith(FINAL_CHANCE_PREFIX)
    for name in (FINAL_EN_DEV, FINAL_ALL_LANGUAGES, FINAL_ZERO_SHOT):
        assert name.startswith(FINAL_PREFIX)


def test_summarize_final_means():
    summary = summarize_final({"en": 80.0, "de": 70.0, "sw": 50.0}, "en")
    assert summary[FINAL_EN_DEV] == 80.0
    assert summary[FINAL_ZERO_SHOT] == pytest.approx(60.0)
    assert summary[FINAL_ALL_LANGUAGES] == pytest.approx(200 / 3)
    only_english = summarize_final({"en": 80.0}, "en")
    assert FINAL_ZERO_SHOT not in only_english and only_english[FINAL_ALL_LANGUAGES] == 80.0
    retrieval = summarize_final({"de": 90.0, "fr": 70.0}, "en")  # no English score: no English dev
    assert FINAL_EN_DEV not in retrieval and retrieval[FINAL_ZERO_SHOT] == retrieval[FINAL_ALL_LANGUAGES] == 80.0
