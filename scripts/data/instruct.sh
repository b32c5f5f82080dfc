#!/usr/bin/env bash
# Stage-2 data of SQ-LLaVA (LLaVA data): LLaVA-1.5's 665K instruction mix and the five image sets it uses.
#
#   llava_v1_5_mix665k.json (liuhaotian/LLaVA-Instruct-150K)  ~1 GB  -> $DATA_ROOT/llava_v1_5_mix665k.json
#   COCO train2017.zip                       ~18 GB, 118K images    -> $DATA_ROOT/coco/train2017/
#   GQA images.zip                           ~20 GB, 148K images    -> $DATA_ROOT/gqa/images/
#   OCR-VQA (dataset.json + loadDataset.py, Google Drive; then each image from its URL, saved as <id>.jpg as
#            LLaVA's docs ask: only the ~80K the mix uses, OCRVQA_ALL=1 for all 207K)
#                                                                   -> $DATA_ROOT/ocr_vqa/{dataset.json,images/}
#   TextVQA train_val_images.zip             ~7 GB, 25K images      -> $DATA_ROOT/textvqa/train_images/
#   Visual Genome images.zip / images2.zip   ~9 GB + ~5 GB, 108K    -> $DATA_ROOT/vg/VG_100K/, vg/VG_100K_2/
#
# These are the defaults of lora_instruct_tuning.sh (DATA_PATH ./playground/data/llava_v1_5_mix665k.json,
# IMAGE_FOLDER ./playground/data): the mix's image paths are coco/train2017/..., gqa/images/..., ocr_vqa/images/...,
# textvqa/train_images/..., vg/VG_100K(_2)/.... ShareGPT4V's SFT mix uses the same folders (scripts/data/sharegpt4v.sh).
#
#   bash scripts/data/instruct.sh
#   DRY_RUN=1 bash scripts/data/instruct.sh
# Environment: scripts/data/_lib.sh, plus OCRVQA_ALL=1. Ends with the image check of python -m llava.data.inspect.
source "$(dirname "$0")/_lib.sh"

start "LLaVA-1.5 665K instruction mix and its images"
MIX=$DATA_ROOT/llava_v1_5_mix665k.json

section "instruction mix"
fetch "$HF_ENDPOINT/datasets/liuhaotian/LLaVA-Instruct-150K/resolve/main/llava_v1_5_mix665k.json" "$MIX" "~1 GB"

section "COCO train2017"
get_archive "http://images.cocodataset.org/zips/train2017.zip" "$DATA_ROOT/coco/train2017" "~18 GB"

section "GQA"
get_archive "https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip" "$DATA_ROOT/gqa/images" "~20 GB"

section "OCR-VQA"
O=$DATA_ROOT/ocr_vqa
if filled "$O/images" && [ ! -f "$O/dataset.json" ]; then
  say "have $O/images (no dataset.json to resume from)"
else
  if [ ! -f "$O/dataset.json" ]; then
    if dry; then
      say "would fetch Google Drive folder 1_GYPY5UkUy7HIcR0zq3ZCFgeZN7BAfm_ (dataset.json, loadDataset.py; gdown)"
      say "         -> $O/"
    else
      need gdown "pip install gdown"
      mkdir -p "$O"
      gdown --folder "https://drive.google.com/drive/folders/1_GYPY5UkUy7HIcR0zq3ZCFgeZN7BAfm_" -O "$O" \
        || die "Google Drive download failed: put OCR-VQA's dataset.json (drive folder 1_GYPY5UkUy7HIcR0zq3ZCFgeZN7BAfm_) in $O and rerun"
      # gdown may keep the Drive folder's name as a subfolder
      [ -f "$O/dataset.json" ] || { found=$(find "$O" -name dataset.json -print -quit); [ -n "$found" ] && mv "$found" "$O/dataset.json"; }
      [ -f "$O/dataset.json" ] || die "no dataset.json in $O after the Google Drive download"
    fi
  fi
  only=(--only-in "$MIX")
  [ "${OCRVQA_ALL:-0}" = 1 ] && only=()
  ocr_cmd=("$PYTHON" scripts/data/ocr_vqa.py --dataset "$O/dataset.json" --out "$O/images" "${only[@]}")
  if dry; then
    say "would fetch the OCR-VQA images$([ ${#only[@]} -gt 0 ] && echo ' the mix uses (~80K)') from their URLs, saved as <id>.jpg:"
    say "         ${ocr_cmd[*]}"
  else
    "${ocr_cmd[@]}"
  fi
fi

section "TextVQA"
get_archive "https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip" "$DATA_ROOT/textvqa/train_images" "~7 GB"

section "Visual Genome"
get_archive "https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip" "$DATA_ROOT/vg/VG_100K" "~9 GB"
get_archive "https://cs.stanford.edu/people/rak248/VG_100K_2/images2.zip" "$DATA_ROOT/vg/VG_100K_2" "~5 GB"

section "check"
check_images "$MIX" "$DATA_ROOT" v1
finish
