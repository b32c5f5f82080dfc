"""Convert between our checkpoints and transformers' native `LlavaForConditionalGeneration` (vLLM, SGLang, lmms-eval).

    python -m llava.model.export --model-path P [--model-base B] --output OUT            # ours -> HF Llava
    python -m llava.model.export --to-reference --model-path HF_DIR --output OUT          # HF Llava -> ours

Only MLP projectors with two Linear layers and GELU (`mlp2x_gelu`) exist in the HF format. HF's processor does
not pad images to a square: a model trained with `image_aspect_ratio=pad` should be fed padded images there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.model.builder import load_pretrained_model, save_pretrained_llava
from llava.model.config import config_from_dict
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower


class ExportError(ValueError):
    """The model cannot be expressed in the target format."""


def _hf_projector_keys(model: LlavaLlamaForCausalLM) -> dict[str, str]:
    layers = list(model.mm_projector.children()) if isinstance(model.mm_projector, nn.Sequential) else []
    shape = [type(m).__name__ for m in layers]
    if shape != ["Linear", "GELU", "Linear"] or getattr(layers[1], "approximate", "none") != "none":
        raise ExportError(
            f"mm_projector_type={model.config.mm_projector_type!r} has no LlavaForConditionalGeneration equivalent "
            "(it supports Linear-GELU-Linear, i.e. mlp2x_gelu)"
        )
    return {"0.weight": "linear_1.weight", "0.bias": "linear_1.bias", "2.weight": "linear_2.weight",
            "2.bias": "linear_2.bias"}


def to_hf(model: LlavaLlamaForCausalLM, tokenizer) -> tuple[LlavaForConditionalGeneration, object]:
    """An equivalent HF Llava model (with an `<image>` token added to the tokenizer) and that tokenizer."""
    projector_keys = _hf_projector_keys(model)
    tower = model._tower()
    tokenizer = _copy_tokenizer(tokenizer)
    if DEFAULT_IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([DEFAULT_IMAGE_TOKEN], special_tokens=True)
    image_token = tokenizer.convert_tokens_to_ids(DEFAULT_IMAGE_TOKEN)
    text_config = model.language_model.config.to_dict()
    text_config = {k: v for k, v in text_config.items() if not k.startswith("mm_") and k not in (
        "image_aspect_ratio", "tune_mm_mlp_adapter", "num_latents", "architectures")}
    text_config["vocab_size"] = max(len(tokenizer), text_config["vocab_size"])
    config = LlavaConfig(
        vision_config=tower.config.to_dict(), text_config=text_config, image_token_index=image_token,
        image_seq_length=model.num_image_tokens, vision_feature_layer=tower.select_layer,
        vision_feature_select_strategy="default" if tower.select_feature == "patch" else "full",
        projector_hidden_act="gelu", multimodal_projector_bias=True,
    )
    hf = LlavaForConditionalGeneration(config).to(model.dtype)
    state = {}
    for key, value in model.language_model.state_dict().items():
        if key.startswith("model."):
            state["model.language_model." + key[len("model.") :]] = value
        elif key.startswith("lm_head."):
            state[key] = value
    for key, value in tower.vision_tower.state_dict().items():
        state["model.vision_tower." + key] = value
    for ours, theirs in projector_keys.items():
        state["model.multi_modal_projector." + theirs] = model.mm_projector.state_dict()[ours]
    vocab = text_config["vocab_size"]
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        old = state[key]
        if old.shape[0] < vocab:  # rows for the added <image> token: its embedding is always replaced by features
            extra = old.mean(0, keepdim=True).expand(vocab - old.shape[0], -1).clone()
            state[key] = torch.cat([old, extra], 0)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ExportError(f"key mapping incomplete: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return hf.eval(), tokenizer


def from_hf(hf: LlavaForConditionalGeneration) -> LlavaLlamaForCausalLM:
    """Our model from an HF Llava model (MLP projector); the added `<image>` embedding rows are kept."""
    cfg = hf.config
    data = cfg.text_config.to_dict()
    tower = CLIPVisionTower(
        cfg.vision_config, cfg.vision_feature_layer,
        "patch" if cfg.vision_feature_select_strategy == "default" else "cls_patch",
    )
    data.update(mm_projector_type="mlp2x_gelu", mm_hidden_size=cfg.vision_config.hidden_size,
                mm_vision_config=cfg.vision_config.to_dict(), mm_vision_select_layer=cfg.vision_feature_layer,
                mm_vision_select_feature=tower.select_feature, mm_vision_tower=None)
    model = LlavaLlamaForCausalLM(config_from_dict(data), vision_tower=tower).to(hf.dtype)
    state = {}
    for key, value in hf.state_dict().items():
        if key.startswith("model.language_model."):
            state["language_model.model." + key[len("model.language_model.") :]] = value
        elif key.startswith("lm_head."):
            state["language_model." + key] = value
        elif key.startswith("model.vision_tower."):
            state["vision_tower.vision_tower." + key[len("model.vision_tower.") :]] = value
        elif key.startswith("model.multi_modal_projector."):
            name = key[len("model.multi_modal_projector.") :]
            state["mm_projector." + name.replace("linear_1", "0").replace("linear_2", "2")] = value
    model.load_state_dict(state, strict=True)
    return model.eval()


def _copy_tokenizer(tokenizer):
    import copy

    return copy.deepcopy(tokenizer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--lora-pretrain", default=None)
    parser.add_argument("--output", required=True)
    parser.add_argument("--to-reference", action="store_true", help="convert an HF Llava directory to our format")
    args = parser.parse_args(argv)
    out = Path(args.output)
    if args.to_reference:
        hf = LlavaForConditionalGeneration.from_pretrained(args.model_path)
        model = from_hf(hf)
        tokenizer = AutoTokenizer.from_pretrained(args.model_path)
        save_pretrained_llava(model, out, tokenizer, CLIPImageProcessor.from_pretrained(args.model_path))
    else:
        tokenizer, model, processor, _ = load_pretrained_model(
            args.model_path, args.model_base, lora_pretrain=args.lora_pretrain, dtype="auto"
        )
        hf, tokenizer = to_hf(model, tokenizer)
        hf.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        processor.save_pretrained(str(out))
        note = {"image_aspect_ratio": getattr(model.config, "image_aspect_ratio", "square"),
                "note": "pad images to a square with the CLIP mean colour before HF's processor when 'pad'"}
        (out / "llava_export.json").write_text(json.dumps(note, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
