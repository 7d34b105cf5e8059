import os

# The HF hub is unreachable on CI machines: make any accidental hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# The tiny XLM-R shared by the head and retrieval tests (no MLM steps: weights are not the point).
TINY_SPEC = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, mlm_steps=0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """The embedded model's tokenizer (a tiny XLM-R-style Unigram), built once per session."""
    from xstilts.trainables.embedded_model import EmbeddedModelSpec, ensure_embedded_model

    cache = tmp_path_factory.getbasetemp() / "xstilts-embedded"
    return ensure_embedded_model(cache, EmbeddedModelSpec(**TINY_SPEC), log=lambda *_: None)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)
