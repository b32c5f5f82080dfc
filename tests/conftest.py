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


@pytest.fixture(scope="session")
def tiny_foundation(tmp_path_factory, tokenizer_dir_legacy):
    """Random tiny LM (with the real tokenizer) and CLIP tower directories, written once per session."""
    from llava.model.tiny import write_tiny_language_model, write_tiny_vision_tower

    root = tmp_path_factory.mktemp("tiny_foundation")
    lm = write_tiny_language_model(root / "lm", tokenizer_dir_legacy)
    tower = write_tiny_vision_tower(root / "tower")
    return {"lm": lm, "tower": tower, "tokenizer": tokenizer_dir_legacy}


@pytest.fixture(scope="session")
def shipped_foundation() -> dict:
    """The quickstart's shipped foundation (checkpoints/tiny-foundation): an LM pretrained on ShapesWorld text, so
    that at the "...</s>VUSER:" cue it asks questions in the world's language, as a trained model does."""
    from llava.quickstart.foundation import SHIPPED, verify

    found = verify(SHIPPED, check_generator=False)
    return {"lm": found.language_model, "tower": found.vision_tower, "tokenizer": found.tokenizer}


@pytest.fixture
def tiny_model_factory(tiny_foundation):
    """Build a tiny LlavaLlamaForCausalLM with a given projector type (random projector, loaded LM and tower)."""
    import torch

    from llava.model.builder import load_language_model, load_vision_tower
    from llava.model.llava_llama import LlavaLlamaForCausalLM
    from llava.model.tiny import tiny_llava_config

    def make(projector_type: str = "mlp2x_gelu", seed: int = 0, **mm):
        torch.manual_seed(seed)
        config = tiny_llava_config(tiny_foundation["lm"], tiny_foundation["tower"], projector_type, **mm)
        lm = load_language_model(tiny_foundation["lm"], config, torch.float32)
        tower = load_vision_tower(config, None, torch.float32)
        return LlavaLlamaForCausalLM(config, language_model=lm, vision_tower=tower).eval()

    return make


def write_tiny_checkpoint(out: Path, tiny_foundation: dict, seed: int = 0, projector_type: str = "mlp2x_gelu",
                          **mm) -> Path:
    """A full checkpoint (random projector, the tiny LM and tower) written by save_pretrained_llava, tokenizer and
    image processor included: what the entry points, the engine and the demo load."""
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor

    from llava.model.builder import load_language_model, load_vision_tower, save_pretrained_llava
    from llava.model.llava_llama import LlavaLlamaForCausalLM
    from llava.model.tiny import tiny_llava_config

    torch.manual_seed(seed)
    config = tiny_llava_config(tiny_foundation["lm"], tiny_foundation["tower"], projector_type, **mm)
    model = LlavaLlamaForCausalLM(config, language_model=load_language_model(tiny_foundation["lm"], config, torch.float32),
                                  vision_tower=load_vision_tower(config, None, torch.float32))
    save_pretrained_llava(model, out, AutoTokenizer.from_pretrained(tiny_foundation["lm"]),
                          CLIPImageProcessor.from_pretrained(tiny_foundation["tower"]))
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and a loaded CI box loses a lot to them (a module opts in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir_legacy):
    """The legacy LLaMA tokenizer, loaded."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir_legacy)


@pytest.fixture(scope="module")
def processor(tiny_foundation):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor.from_pretrained(tiny_foundation["tower"])


@pytest.fixture
def stage1_dir(tmp_path: Path) -> Path:
    """A stage-1 output as lora_instruct_tuning.sh expects it (the files only have to exist for DRY_RUN)."""
    stage1 = tmp_path / "stage1"
    (stage1 / "Vit-lora").mkdir(parents=True)
    (stage1 / "mm_projector.bin").write_bytes(b"")
    (stage1 / "Vit-lora" / "adapter_config.json").write_text("{}")
    return stage1
