"""Tiny random foundation models (CLIP tower, LLaMA LM) written as ordinary transformers directories.

They exercise the exact `from_pretrained` paths of the 7B setup on a laptop CPU: tests build them from
configs (never downloaded), and the quickstart starts from them before pretraining.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from llava.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from llava.model.image_processor import CLIPImageProcessor


def write_tiny_vision_tower(
    out_dir: str | Path, image_size: int = 32, patch_size: int = 16, hidden_size: int = 32,
    num_layers: int = 2, num_heads: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32,
) -> Path:
    """A random `CLIPVisionModel` + `CLIPImageProcessor` directory (stand-in for openai/clip-vit-large-patch14-336)."""
    out = Path(out_dir)
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, image_size=image_size, patch_size=patch_size, projection_dim=hidden_size,
    )
    CLIPVisionModel(config).to(dtype).save_pretrained(str(out))
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD), do_convert_rgb=True,
    ).save_pretrained(str(out))
    return out


def write_tiny_language_model(
    out_dir: str | Path, tokenizer_dir: str | Path, hidden_size: int = 32, num_layers: int = 2,
    num_heads: int = 4, seed: int = 0, max_position_embeddings: int = 2048, intermediate_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A random LLaMA causal LM sized to the tokenizer, saved with that tokenizer (stand-in for vicuna-7b)."""
    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.unk_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.unk_token_id
    model.to(dtype).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def tiny_llava_config(lm_dir: str | Path, tower_dir: str | Path, projector_type: str = "mlp2x_gelu", **mm):
    """The flat LLaVA config for a tiny LM + tower pair (what training writes for a real run)."""
    from llava.model.config import config_from_dict, read_config_dict

    data = read_config_dict(lm_dir)
    tower = CLIPVisionConfig.from_pretrained(str(tower_dir))
    data.update(
        mm_vision_tower=str(tower_dir), mm_projector_type=projector_type, mm_hidden_size=tower.hidden_size,
        mm_vision_config=tower.to_dict(), mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_cluster_centers=2, num_latents=3,
    )
    data.update(mm)
    return config_from_dict(data)
