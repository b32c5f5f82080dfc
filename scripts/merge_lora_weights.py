"""Merge a LoRA checkpoint (LLM LoRA + Vit-lora + projector) into a full model, saved in the training dtype.

    python scripts/merge_lora_weights.py --model-path checkpoints/run-lora --model-base lmsys/vicuna-7b-v1.5 \
        --save-model-path checkpoints/run-merged [--lora-pretrain DIR] [--vision-tower DIR] [--dtype bf16|fp16|fp32]

The released ZachSun/sqllava-lora-7b merges onto Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5
with the tower Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12 (scripts/download_models.sh fetches both).

Unlike the reference script, the ViT LoRA (`<model-path>/Vit-lora` or --lora-pretrain) is merged too, and the
result is saved in the dtype the model was trained in (the config's `dtype`), not fp32.
"""

from __future__ import annotations

import argparse

from llava.model.builder import load_pretrained_model, save_pretrained_llava
from llava.model.config import load_llava_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--lora-pretrain", "--lora_pretrain", dest="lora_pretrain", default=None)
    parser.add_argument("--vision-tower", "--vision_tower", dest="vision_tower", default=None,
                        help="replaces config.json's mm_vision_tower (the merged config records this one)")
    parser.add_argument("--save-model-path", required=True)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                        help="default: the dtype recorded in the checkpoint's config (training dtype)")
    args = parser.parse_args(argv)
    recorded = str(getattr(load_llava_config(args.model_path), "dtype", None) or "float32").replace("torch.", "")
    dtype = args.dtype or {"bfloat16": "bf16", "float16": "fp16"}.get(recorded, "fp32")
    tokenizer, model, processor, _ = load_pretrained_model(
        args.model_path, args.model_base, lora_pretrain=args.lora_pretrain, dtype=dtype,
        vision_tower=args.vision_tower,
    )
    save_pretrained_llava(model, args.save_model_path, tokenizer, processor)
    print(f"merged model ({dtype}) written to {args.save_model_path}")


if __name__ == "__main__":
    main()
