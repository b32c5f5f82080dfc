#!/usr/bin/env bash
# SQ-LLaVA* data (ShareGPT4V): the two ShareGPT4V JSONs and the image sets they use, in ShareGPT4V's layout under
# $DATA_ROOT (image paths in the JSONs: coco/train2017/..., llava/llava_pretrain/images/..., sam/images/...,
# share_textvqa/images/..., web-celebrity/images/..., web-landmark/images/..., wikiart/images/..., and the
# LLaVA-1.5 folders gqa/, ocr_vqa/, textvqa/, vg/).
#
#   sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json   ~1.2 GB  SFT mix (stage 2 of sqllava-star-*)
#   share-captioner_coco_lcs_sam_1246k_1107.json                 ~1.5 GB  ShareGPT4V-PT (sqllava-star-*-pt2)
#       (Lin-Chen/ShareGPT4V) -> $DATA_ROOT/ (the recipes' DATA_PATH; ShareGPT4V's own docs put them in sharegpt4v/)
#   LCS-558K and the LLaVA-1.5 images: scripts/data/pretrain.sh and scripts/data/instruct.sh, run first
#       (WITH_LLAVA=0 skips them); llava/llava_pretrain/images -> LLaVA-Pretrain/images (a link, not a copy)
#   SAM, the 9K images of the SFT mix (Google Drive zip)           -> $DATA_ROOT/sam/images/
#   share_textvqa, web-celebrity, web-landmark, wikiart (Google Drive zips, academic use only)
#                                                                  -> $DATA_ROOT/<name>/images/
#   SAM for ShareGPT4V-PT: SA-1B shards sa_000000 ... sa_000050 (~11 GB each, ~570K images; licence-gated:
#       accept the SA-1B terms at https://ai.meta.com/datasets/segment-anything-downloads/, save the links
#       file it gives and rerun with SAM_LINKS=<that file>)          -> $DATA_ROOT/sam/images/
#
#   bash scripts/data/sharegpt4v.sh
#   SAM_LINKS=~/Downloads/segment_anything_links.txt bash scripts/data/sharegpt4v.sh    # + the PT SAM shards
#   DRY_RUN=1 bash scripts/data/sharegpt4v.sh
# Environment: scripts/data/_lib.sh, plus WITH_LLAVA, SAM_LINKS, SAM_SHARDS (default 51: sa_000000-sa_000050).
source "$(dirname "$0")/_lib.sh"
HERE=scripts/data

if [ "${WITH_LLAVA:-1}" = 1 ]; then
  # The same environment: DATA_ROOT, DRY_RUN, CHECK... The image check runs once, at the end of this script.
  CHECK=0 bash "$HERE/pretrain.sh"
  CHECK=0 bash "$HERE/instruct.sh"
  echo
fi

start "ShareGPT4V: Lin-Chen/ShareGPT4V JSONs and the extra image sets"
HF=$HF_ENDPOINT/datasets/Lin-Chen/ShareGPT4V/resolve/main
SFT=$DATA_ROOT/sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json
PT=$DATA_ROOT/share-captioner_coco_lcs_sam_1246k_1107.json

section "JSONs"
fetch "$HF/$(basename "$SFT")" "$SFT" "~1.2 GB"
fetch "$HF/$(basename "$PT")" "$PT" "~1.5 GB"

section "LCS-558K images under ShareGPT4V's name"
link_dir "$DATA_ROOT/llava/llava_pretrain/images" "$DATA_ROOT/LLaVA-Pretrain/images"

section "SAM (the SFT mix's 9K images)"
get_archive "gdrive:1dKumdOKSXtV7lIXdrG7jsIK_z2vZv2gs" "$DATA_ROOT/sam/images" "9K images"

section "web data (academic use only)"
# File ids of the zips in ShareGPT4V's web-data Drive folder 1tCUQ-sq6vdshZVkF0ZeF3K4eztkXJgax (if one fails,
# download that zip from the folder by hand and put its images in <name>/images/).
get_archive "gdrive:1f4v_3e1OJtyYqam1CEp6RenCNTU5_mG2" "$DATA_ROOT/share_textvqa/images"
get_archive "gdrive:1-SB71C3j1mVg0kDDXwj2IWGEoBoRUD-J" "$DATA_ROOT/web-celebrity/images"
get_archive "gdrive:1JpJkN7ZMA50xAhMx9O-rVb5yLhfGm3_o" "$DATA_ROOT/web-landmark/images"
get_archive "gdrive:1FxB2Nw-vWUcTUSI_dBpPIykb-uGYoEqV" "$DATA_ROOT/wikiart/images"

section "SAM shards for ShareGPT4V-PT"
SHARDS=${SAM_SHARDS:-51}
if [ -z "${SAM_LINKS:-}" ]; then
  manual "ShareGPT4V-PT's SAM images (SA-1B sa_000000-sa_$(printf '%06d' $((SHARDS - 1))).tar, ~11 GB each): accept the" \
         "terms at https://ai.meta.com/datasets/segment-anything-downloads/, save the links file and rerun with" \
         "SAM_LINKS=<file> (only the PT step, sqllava-star-*-pt2, needs them)"
else
  [ -f "$SAM_LINKS" ] || die "SAM_LINKS=$SAM_LINKS: no such file"
  for i in $(seq 0 $((SHARDS - 1))); do
    name=$(printf 'sa_%06d.tar' "$i")
    done_mark=$DOWNLOAD_DIR/sam/$name.done
    if [ -f "$done_mark" ]; then say "have $name"; continue; fi
    url=$(awk -F'\t' -v n="$name" '$1 == n {print $2; exit}' "$SAM_LINKS")
    [ -n "$url" ] || die "$name is not in $SAM_LINKS (expected lines file_name<TAB>cdn_link)"
    fetch "$url" "$DOWNLOAD_DIR/sam/$name" "~11 GB"
    if dry; then say "would extract the .jpg files of $name -> $DATA_ROOT/sam/images/"; continue; fi
    mkdir -p "$DATA_ROOT/sam/images"
    tar -xf "$DOWNLOAD_DIR/sam/$name" -C "$DATA_ROOT/sam/images" --wildcards --no-anchored '*.jpg' \
      --transform 's,.*/,,'
    touch "$done_mark"
    [ "$KEEP_ARCHIVES" = 1 ] || rm -f "$DOWNLOAD_DIR/sam/$name"
  done
fi

section "check"
check_images "$SFT" "$DATA_ROOT" v1
check_images "$PT" "$DATA_ROOT" plain
finish
