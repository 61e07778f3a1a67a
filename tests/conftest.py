"""Session-wide fixtures: the real models (the default SmolLM2, and Gemma 3 270M that
`make setup` pulls) and transformers' reading of them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # test helper modules (hf_gguf, ...)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from lila.store import default_model_path
    path = default_model_path()
    assert path is not None, "the default model is not installed (make setup installs it)"
    return path


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    from lila.store import resolve_model
    return resolve_model("gemma3")   # not pulled: a LilaError that says how to pull it


def pytest_collection_modifyitems(items):
    """Tests that take transformers' Gemma 3 tokenizer (tok_fixtures.gemma3_tok: about 14 s
    to build, once a session) are slow, as `pytest -m "not slow"` counts them."""
    for item in items:
        params = getattr(item, "callspec", None)
        if "gemma3_tok" in item.fixturenames or (params and params.params.get("tok_case") == "gemma3"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    import lila
    with lila.load(smollm2_path, n_ctx=512, backend="reference") as model:
        yield model


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_path):
    """transformers' own reading of the same GGUF (dequantized to fp32), and its tokenizer."""
    import transformers
    kwargs = dict(gguf_file=smollm2_path.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_path.parent, **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_path.parent, **kwargs).eval()
    return model, tokenizer
