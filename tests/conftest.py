"""Shared fixtures: a real LLaMA-family SentencePiece tokenizer (shipped by mistral-common), both `legacy` modes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _sentencepiece_model() -> Path:
    mistral_common = pytest.importorskip("mistral_common", reason="the test extra ships the tokenizer")
    path = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    assert path.is_file(), f"mistral-common no longer ships {path}"
    return path


def write_llama_tokenizer(directory: Path, legacy: bool) -> Path:
    """A LLaMA-convention tokenizer dir (vocab 32000, unk 0, bos 1, eos 2) loadable by AutoTokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(_sentencepiece_model(), directory / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": legacy,
        "model_max_length": 2048,
        "unk_token": "<unk>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": None,
        "padding_side": "right",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return directory


@pytest.fixture(scope="session")
def tokenizer_dir_legacy(tmp_path_factory) -> Path:
    return write_llama_tokenizer(tmp_path_factory.mktemp("tok_legacy"), legacy=True)


@pytest.fixture(scope="session")
def tokenizer_dir_nonlegacy(tmp_path_factory) -> Path:
    return write_llama_tokenizer(tmp_path_factory.mktemp("tok_nonlegacy"), legacy=False)


@pytest.fixture(scope="session", params=[True, False], ids=["legacy", "nonlegacy"])
def llama_tokenizer(request, tokenizer_dir_legacy, tokenizer_dir_nonlegacy):
    from transformers import AutoTokenizer

    path = tokenizer_dir_legacy if request.param else tokenizer_dir_nonlegacy
    return AutoTokenizer.from_pretrained(path)
