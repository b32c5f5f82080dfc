"""Benchmark shapes (LLaVA-1.5-7B and a CPU-sized tiny preset) and random-weight builders for ours and transformers'."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch
from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from llava.model.image_processor import CLIPImageProcessor


@dataclasses.dataclass(frozen=True)
class TrainShape:
    """One training benchmark: `batch` samples of `seq` positions (576 image + text), activation checkpointing."""

    batch: int
    seq: int
    ckpt: bool = True


@dataclasses.dataclass(frozen=True)
class VarlenShape:
    """Samples of lengths uniform in [min_len, max_len]: padded vs packed into rows of at most each of `row_tokens`
    (None: one row)."""

    batch: int
    min_len: int
    max_len: int
    row_tokens: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    vision: dict
    text: dict
    dtype: str
    stage1: TrainShape
    stage2: TrainShape
    stage2_fast: TrainShape
    varlen: VarlenShape
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    cluster_centers: int
    cluster_iters: int
    num_latents: int
    projector_batch: int
    projector_iters: int
    gen_text_tokens: int
    gen_new_tokens: int
    gen_batches: tuple[int, ...]
    gen_min_time_s: float
    engine_image_size: tuple[int, int]
    warmup: int
    steps: int
    image_token_index: int  # transformers' Llava: the id standing for one image position
    baseline: dict | None = None

    @property
    def image_tokens(self) -> int:
        return (self.vision["image_size"] // self.vision["patch_size"]) ** 2

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


# Peer baseline: transformers' LlavaForConditionalGeneration on one H100 (scripts/bench/README.md).
PEER_BASELINE_H100 = {
    "stage1": {"tokens_per_s": 10500, "mfu": 0.39, "peak_mem_gib": 31.5},
    "stage2": {"tokens_per_s": 7700, "mfu": 0.29, "peak_mem_gib": 27.0},
    "stage2_fast": {"tokens_per_s": 10600, "mfu": 0.41, "peak_mem_gib": 46.0},
    "generate": {"1": 0.93, "16": 12.9, "64": 21.3, "128": 29.6},
    "projector": {"cluster (reference broadcast)": {"fwd_bwd_ms": 57.0, "peak_mem_gib": 9.6},
                  "mlp2x_gelu": {"fwd_bwd_ms": 2.8, "peak_mem_gib": 1.1}},
    "matmul_tflops": 758.0,
}

PRESETS: dict[str, Preset] = {
    "7b": Preset(
        name="7b",
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
        # vocab 32064: llava-hf's padded LLaMA vocabulary, so both models carry the same output layer.
        text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5),
        dtype="bfloat16",
        stage1=TrainShape(32, 768), stage2=TrainShape(16, 1024), stage2_fast=TrainShape(4, 1024, ckpt=False),
        varlen=VarlenShape(8, 600, 2048, row_tokens=(2048, 4096)),
        lora_r=128, lora_alpha=256, lora_dropout=0.05, cluster_centers=256, cluster_iters=2, num_latents=256,
        projector_batch=16, projector_iters=10,
        gen_text_tokens=48, gen_new_tokens=32, gen_batches=(1, 16, 64, 128), gen_min_time_s=3.0,
        engine_image_size=(640, 480), warmup=2, steps=5, image_token_index=32000, baseline=PEER_BASELINE_H100,
    ),
    # CPU-sized but with the real 32064-wide output layer, where the loss path matters (about 2 minutes on 2 cores).
    "small": Preset(
        name="small",
        vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    image_size=112, patch_size=14, projection_dim=64, hidden_act="quick_gelu"),
        text=dict(vocab_size=32064, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, rms_norm_eps=1e-5),
        dtype="float32",
        stage1=TrainShape(4, 192), stage2=TrainShape(4, 256), stage2_fast=TrainShape(2, 256, ckpt=False),
        varlen=VarlenShape(8, 80, 512, row_tokens=(512, 1024)),
        lora_r=16, lora_alpha=32, lora_dropout=0.05, cluster_centers=32, cluster_iters=2, num_latents=32,
        projector_batch=4, projector_iters=3,
        gen_text_tokens=48, gen_new_tokens=8, gen_batches=(1, 8), gen_min_time_s=2.0,
        engine_image_size=(320, 240), warmup=1, steps=3, image_token_index=32000,
    ),
    "tiny": Preset(
        name="tiny",
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=56, patch_size=14, projection_dim=32, hidden_act="quick_gelu"),
        text=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5),
        dtype="float32",
        stage1=TrainShape(2, 48), stage2=TrainShape(2, 64), stage2_fast=TrainShape(1, 64, ckpt=False),
        varlen=VarlenShape(4, 24, 128, row_tokens=(128, None)),
        lora_r=8, lora_alpha=16, lora_dropout=0.05, cluster_centers=4, cluster_iters=2, num_latents=8,
        projector_batch=2, projector_iters=2,
        gen_text_tokens=48, gen_new_tokens=4, gen_batches=(1, 4), gen_min_time_s=0.0,
        engine_image_size=(64, 48), warmup=1, steps=2, image_token_index=500,
    ),
}


@contextlib.contextmanager
def default_device_dtype(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly on `device` in `dtype` (a 7B model never exists in fp32 or on the host)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def vision_config(preset: Preset) -> CLIPVisionConfig:
    return CLIPVisionConfig(**preset.vision)


def text_config(preset: Preset) -> LlamaConfig:
    # use_cache False as in training (train.py); generation asks for the cache explicitly.
    return LlamaConfig(**preset.text, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                       use_cache=False)


def build_ours(preset: Preset, device: torch.device, dtype: torch.dtype, projector_type: str = "mlp2x_gelu",
               attn: str = "sdpa"):
    """Our LlavaLlamaForCausalLM (LLaMA + CLIP + projector) with random weights, from configs only."""
    from llava.model.config import config_from_dict
    from llava.model.llava_llama import LlavaLlamaForCausalLM

    vision = vision_config(preset)
    data = text_config(preset).to_dict()
    data.update(
        mm_vision_config=vision.to_dict(), mm_projector_type=projector_type, mm_hidden_size=vision.hidden_size,
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_cluster_centers=preset.cluster_centers,
        mm_cluster_iters=preset.cluster_iters, num_latents=preset.num_latents,
    )
    config = config_from_dict(data)
    with default_device_dtype(device, dtype):
        model = LlavaLlamaForCausalLM(config, attn_implementation=attn)
    model.language_model.generation_config.eos_token_id = 2
    return model.to(device=device, dtype=dtype)


def build_hf(preset: Preset, device: torch.device, dtype: torch.dtype, attn: str = "sdpa"):
    """transformers' own LlavaForConditionalGeneration at the same shapes, random weights."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=vision_config(preset).to_dict(), text_config=text_config(preset).to_dict(),
        image_token_index=preset.image_token_index, image_seq_length=preset.image_tokens, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", multimodal_projector_bias=True,
    )
    with default_device_dtype(device, dtype):
        model = LlavaForConditionalGeneration._from_config(config, attn_implementation=attn, dtype=dtype)
    return model.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------- synthetic data
def samples(preset: Preset, lengths: Sequence[int], seed: int = 0) -> list[dict]:
    """Dataset-style items: [BOS, <image>, text...] whose expanded length is `lengths[i]`; every text token trains."""
    gen = torch.Generator().manual_seed(seed)
    n_img = preset.image_tokens
    size = preset.vision["image_size"]
    out = []
    for i, length in enumerate(lengths):
        n_text = length - n_img - 1
        if n_text < 1:
            raise ValueError(f"sequence of {length} positions leaves no text after {n_img} image positions")
        text = torch.randint(3, preset.image_token_index, (n_text,), generator=gen)
        ids = torch.cat([torch.tensor([1, IMAGE_TOKEN_INDEX]), text])
        labels = torch.cat([torch.tensor([IGNORE_INDEX, IGNORE_INDEX]), text])
        pixels = torch.randn(1, 3, size, size, generator=gen)
        out.append({"input_ids": ids, "labels": labels, "pixel_values": pixels, "index": i})
    return out


def varlen_lengths(preset: Preset, seed: int = 0) -> list[int]:
    shape = preset.varlen
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(shape.min_len, shape.max_len + 1, (shape.batch,), generator=gen).tolist()


def padded_batch(preset: Preset, items: list[dict]) -> dict[str, torch.Tensor]:
    """Right-padded batch through the training collator (image sentinels expanded, attention mask)."""
    from llava.data.collator import DataCollatorForSupervisedDataset

    collate = DataCollatorForSupervisedDataset(num_image_tokens=preset.image_tokens, model_max_length=None,
                                               pad_token_id=0)
    return collate(items)


def packed_batch(preset: Preset, items: list[dict], row_tokens: int | None) -> dict[str, torch.Tensor]:
    from llava.data.packing import PackedCollator

    collate = PackedCollator(num_image_tokens=preset.image_tokens, model_max_length=None, pad_token_id=0,
                             max_row_tokens=row_tokens)
    return collate(items)


def to_hf_batch(preset: Preset, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch for transformers' Llava: image positions hold `image_token_index`."""
    out = dict(batch)
    out["input_ids"] = batch["input_ids"].masked_fill(batch["input_ids"] == IMAGE_TOKEN_INDEX,
                                                      preset.image_token_index)
    return out


def generation_inputs(preset: Preset, batch: int, impl: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """`batch` prompts of image_tokens + gen_text_tokens positions (BOS counted as text), no padding needed."""
    length = preset.image_tokens + preset.gen_text_tokens
    items = samples(preset, [length] * batch, seed)
    out = padded_batch(preset, items)
    out.pop("labels")
    return to_hf_batch(preset, out) if impl == "hf" else out


# ---------------------------------------------------------------------------------------------- engine pieces
def synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer covering the LM's ids, built in memory (no download).

    Its EOS id is `vocab_size`, one past the LM's output layer, so random weights never stop early and every
    answer has exactly `max_new_tokens` tokens. Template words map to <unk>: only the token counts matter here.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<s>": 1, "<pad>": 2, **{f"t{i}": i for i in range(3, vocab_size)}, "</s>": vocab_size}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>")


def image_processor(preset: Preset) -> CLIPImageProcessor:
    size = preset.vision["image_size"]
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD), do_convert_rgb=True)


def engine_question(engine, target_text_tokens: int) -> tuple[str, int]:
    """A question whose v1 prompt has `target_text_tokens` text tokens (BOS included) besides the image positions;
    returns it with the count reached (more when the template alone is longer)."""
    words = ["what"]
    while True:
        ids = engine.tokenize(engine.request(" ".join(words), images=[None]))  # images are only counted here
        n_text = sum(1 for t in ids if t != IMAGE_TOKEN_INDEX)
        if n_text >= target_text_tokens or len(words) > 1024:
            return " ".join(words), n_text
        words.append(f"t{3 + len(words)}")
