#!/usr/bin/env bash
# Stage-1 data: LLaVA's LCS-558K (LAION/CC/SBU captions by BLIP, 558K images) from liuhaotian/LLaVA-Pretrain.
#
#   blip_laion_cc_sbu_558k.json   ~181 MB  -> $DATA_ROOT/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json
#   images.zip                    ~27 GB   -> $DATA_ROOT/LLaVA-Pretrain/images/  (00000/ ... 00659/)
#
# These are the defaults of pretrain.sh (DATA_PATH, IMAGE_FOLDER) and of every recipe's stage 1. ShareGPT4V's
# layout names the same images llava/llava_pretrain/images/: scripts/data/sharegpt4v.sh links that to this folder.
#
#   bash scripts/data/pretrain.sh                 # DATA_ROOT=./playground/data
#   DRY_RUN=1 bash scripts/data/pretrain.sh       # what it would fetch, and where
# Environment (DATA_ROOT, DRY_RUN, DOWNLOAD_DIR, KEEP_ARCHIVES, HF_ENDPOINT, HF_TOKEN, CHECK, TOKENIZER):
# scripts/data/_lib.sh. Ends with the image check of python -m llava.data.inspect (CHECK=0 skips it).
source "$(dirname "$0")/_lib.sh"

start "LCS-558K (stage 1): liuhaotian/LLaVA-Pretrain"
D=$DATA_ROOT/LLaVA-Pretrain
HF=$HF_ENDPOINT/datasets/liuhaotian/LLaVA-Pretrain/resolve/main

section "captions"
fetch "$HF/blip_laion_cc_sbu_558k.json" "$D/blip_laion_cc_sbu_558k.json" "181 MB"
section "images"
get_archive "$HF/images.zip" "$D/images" "~27 GB, 558K images"

section "check"
check_images "$D/blip_laion_cc_sbu_558k.json" "$D/images" plain
finish
