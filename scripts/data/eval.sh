#!/usr/bin/env bash
# Evaluation data: LLaVA-1.5's eval.zip (question files and the playground/data/eval/<benchmark>/ layout that
# scripts/eval/*.sh read), each benchmark's images and annotations, and the caption sets of experiments.sh.
#
#   eval.zip (Google Drive; LLaVA-1.5's question files)          -> $DATA_ROOT/eval/<benchmark>/
#   vqav2       COCO test2015.zip (~12 GB, 81K images)          -> eval/vqav2/test2015/
#   gqa         GQA images (a link to $DATA_ROOT/gqa/images when instruct.sh fetched them, else ~20 GB)
#                                                                -> eval/gqa/data/images
#               testdev_balanced_questions.json (from questions1.2.zip), LLaVA's eval.py (a gist)
#                                                                -> eval/gqa/data/
#   vizwiz      test.zip (8K images), test.json (Annotations.zip) -> eval/vizwiz/test/, eval/vizwiz/test.json
#   sqa         ScienceQA images/test.zip, problems.json, pid_splits.json -> eval/scienceqa/
#   textvqa     TextVQA_0.5.1_val.json; train_val_images (a link to $DATA_ROOT/textvqa/train_images when
#               instruct.sh fetched them, else ~7 GB)            -> eval/textvqa/
#   pope        POPE's coco/coco_pope_{adversarial,popular,random}.json, COCO val2014.zip (~6 GB, 40K images)
#                                                                -> eval/pope/coco/, eval/pope/val2014/
#   mme         MANUAL (licence form)                            -> eval/MME/{MME_Benchmark_release_version,eval_tool}/
#   mmbench     mmbench_dev_20230712.tsv                         -> eval/mmbench/
#   mmbench_cn  mmbench_dev_cn_20231003.tsv                      -> eval/mmbench_cn/
#   seed        SEED-Bench.json, SEED-Bench-image.zip (AILab-CVC/SEED-Bench) -> eval/seed_bench/SEED-Bench-image/;
#               video questions: MANUAL videos (Something-Something v2, Epic-Kitchens 100, Breakfast) in
#               eval/seed_bench/videos/, then the middle frame of each -> eval/seed_bench/SEED-Bench-video-image/
#   llavabench  liuhaotian/llava-bench-in-the-wild               -> eval/llava-bench-in-the-wild/
#   mmvet       mm-vet.zip (GitHub release)                      -> eval/mm-vet/{images/,mm-vet.json}
#   qbench      llvisionqa_dev.json, images_llvisionqa.tar (nanyangtu/LLVisionQA-QBench) -> eval/qbench/{images/}
#   caption     the 7 sets of experiments.sh, built by python -m llava.data.caption_sets -> eval/caption/<set>/:
#               coco_karpathy_test (Karpathy's caption_datasets.zip + COCO val2014, shared with POPE),
#               flickr30k_test (MANUAL images: licence form), nocaps_{in,near,out} (NoCaps val json + its 4,500
#               images), conceptual (MANUAL validation TSV: click-through terms; images from their URLs),
#               concadia (wiki_split.json + resized.zip, Google Drive)
#
#   bash scripts/data/eval.sh                                  # everything
#   BENCHMARKS="pope textvqa caption" bash scripts/data/eval.sh   # a subset (names as scripts/eval/<name>.sh)
#   FLICKR30K_IMAGES=/data/flickr30k-images CC_VAL_TSV=~/Validation_GCC-1.1.0-Validation.tsv bash scripts/data/eval.sh
#   DRY_RUN=1 bash scripts/data/eval.sh
# Environment: scripts/data/_lib.sh, plus BENCHMARKS, FLICKR30K_IMAGES, CC_VAL_TSV.
source "$(dirname "$0")/_lib.sh"

BENCHMARKS=${BENCHMARKS:-"vqav2 gqa vizwiz sqa textvqa pope mme mmbench mmbench_cn seed llavabench mmvet qbench caption"}
E=$DATA_ROOT/eval
want() { [[ " $BENCHMARKS " == *" $1 "* ]]; }
HFD=$HF_ENDPOINT/datasets

start "evaluation data: $BENCHMARKS"

if [ -n "$(echo " $BENCHMARKS " | sed 's/ caption / /g; s/ //g')" ]; then  # every benchmark but the captions
  section "eval.zip: LLaVA-1.5's question files, in the playground/data/eval/<benchmark>/ layout"
  get_archive "gdrive:1atZSBBrAX54yYpxtVVW33zFvcnaHeFPy" "$E" "" "$E/pope/llava_pope_test.jsonl"
fi

coco_val2014() {  # POPE's images, and the COCO Karpathy test set's (once per run)
  [ -z "${_VAL2014:-}" ] || return 0
  _VAL2014=1
  get_archive "http://images.cocodataset.org/zips/val2014.zip" "$E/pope/val2014" "~6 GB, 40K images"
}

# link_or_get LINK SHARED URL SIZE: LINK -> SHARED when the training data already has it, else download to LINK.
link_or_get() {
  if filled "$2"; then link_dir "$1" "$2"; else get_archive "$3" "$1" "$4"; fi
}

if want vqav2; then
  section "VQAv2 test-dev"
  get_archive "http://images.cocodataset.org/zips/test2015.zip" "$E/vqav2/test2015" "~12 GB, 81K images"
fi

if want gqa; then
  section "GQA testdev-balanced"
  link_or_get "$E/gqa/data/images" "$DATA_ROOT/gqa/images" "https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip" "~20 GB"
  fetch_member "https://downloads.cs.stanford.edu/nlp/data/gqa/questions1.2.zip" \
    "$E/gqa/data/testdev_balanced_questions.json" "~1.4 GB zip"
  try_fetch "https://gist.githubusercontent.com/haotian-liu/db6eddc2a984b4cbcc8a7f26fd523187/raw/eval.py" \
    "$E/gqa/data/eval/eval.py" "" "LLaVA's GQA eval.py: https://gist.github.com/haotian-liu/db6eddc2a984b4cbcc8a7f26fd523187; scripts/eval/gqa.sh scores with it when present"
fi

if want vizwiz; then
  section "VizWiz test"
  get_archive "https://vizwiz.cs.colorado.edu/VizWiz_final/images/test.zip" "$E/vizwiz/test" "8K images"
  fetch_member "https://vizwiz.cs.colorado.edu/VizWiz_final/vqa_data/Annotations.zip" "$E/vizwiz/test.json"
fi

if want sqa; then
  section "ScienceQA (test images, problems.json, pid_splits.json)"
  get_archive "https://scienceqa.s3.us-west-1.amazonaws.com/images/test.zip" "$E/scienceqa/images/test"
  for f in problems.json pid_splits.json; do
    try_fetch "https://raw.githubusercontent.com/lupantech/ScienceQA/main/data/scienceqa/$f" "$E/scienceqa/$f" "" \
      "it is in the data/scienceqa folder of https://github.com/lupantech/ScienceQA"
  done
fi

if want textvqa; then
  section "TextVQA val"
  fetch "https://dl.fbaipublicfiles.com/textvqa/data/TextVQA_0.5.1_val.json" "$E/textvqa/TextVQA_0.5.1_val.json"
  link_or_get "$E/textvqa/train_images" "$DATA_ROOT/textvqa/train_images" \
    "https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip" "~7 GB"
fi

if want pope; then
  section "POPE (COCO val2014)"
  for s in adversarial popular random; do
    fetch "https://raw.githubusercontent.com/AoiDragon/POPE/e3e39262c85a6a83f26cf5094022a782cb0df58d/output/coco/coco_pope_$s.json" \
      "$E/pope/coco/coco_pope_$s.json"
  done
  coco_val2014
fi

if want mme; then
  section "MME"
  if have "$E/MME/MME_Benchmark_release_version"; then
    say "have $E/MME/MME_Benchmark_release_version"
  else
    manual "MME is licence-gated: request it as https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/tree/Evaluation says, then put MME_Benchmark_release_version/ and eval_tool/ in $E/MME/"
  fi
fi

if want mmbench; then
  section "MMBench dev (en)"
  fetch "https://download.openmmlab.com/mmclassification/datasets/mmbench/mmbench_dev_20230712.tsv" \
    "$E/mmbench/mmbench_dev_20230712.tsv"
fi

if want mmbench_cn; then
  section "MMBench-CN dev"
  fetch "https://download.openmmlab.com/mmclassification/datasets/mmbench/mmbench_dev_cn_20231003.tsv" \
    "$E/mmbench_cn/mmbench_dev_cn_20231003.tsv"
fi

if want seed; then
  section "SEED-Bench"
  S=$E/seed_bench
  fetch "$HFD/AILab-CVC/SEED-Bench/resolve/main/SEED-Bench.json" "$S/SEED-Bench.json"
  get_archive "$HFD/AILab-CVC/SEED-Bench/resolve/main/SEED-Bench-image.zip" "$S/SEED-Bench-image"
  if have "$S/SEED-Bench-video-image"; then
    say "have $S/SEED-Bench-video-image"
  elif filled "$S/videos"; then
    # eval.zip's extract_video_frames.py (LLaVA's): the middle frame of each video question's clip ->
    # SEED-Bench-video-image/<question_type_id>_<question_id>.png; it reads ./videos/... and SEED-Bench.json from
    # its folder, and refers to an undefined `output`, given here. Needs torch, av, decord (pip install av decord).
    py=$PYTHON
    [[ $py == */* ]] && py=$(realpath "$py")
    if dry; then
      say "would extract the middle frame of each video question: (cd $S && $py extract_video_frames.py)"
    else
      [ -f "$S/extract_video_frames.py" ] || die "no $S/extract_video_frames.py (it comes with eval.zip)"
      mkdir -p "$S/SEED-Bench-video-image"
      (cd "$S" && "$py" -c 'import runpy
runpy.run_path("extract_video_frames.py", init_globals={"output": "/dev/null"}, run_name="__main__")')
    fi
  else
    manual "SEED-Bench video questions (optional; the image part is scored without them): download the videos as https://github.com/AILab-CVC/SEED-Bench/blob/main/DATASET.md says (Something-Something v2 needs a licence) into $S/videos/{20bn-something-something-v2,EPIC-KITCHENS,BreakfastII_15fps_qvga_sync}/ and rerun: the middle frames go to $S/SEED-Bench-video-image/"
  fi
fi

if want llavabench; then
  section "LLaVA-Bench in-the-Wild"
  L=$E/llava-bench-in-the-wild
  if have "$L/images"; then say "have $L/images"; else hf_dataset liuhaotian/llava-bench-in-the-wild "$L"; fi
fi

if want mmvet; then
  section "MM-Vet"
  get_archive "https://github.com/yuweihao/MM-Vet/releases/download/v1/mm-vet.zip" "$E/mm-vet" "" "$E/mm-vet/images"
fi

if want qbench; then
  section "Q-Bench (LLVisionQA dev)"
  QB=$HFD/nanyangtu/LLVisionQA-QBench/resolve/main
  fetch "$QB/llvisionqa_dev.json" "$E/qbench/llvisionqa_dev.json"
  get_archive "$QB/images_llvisionqa.tar" "$E/qbench/images"
fi

if want caption; then
  C=$E/caption
  # build_set SET_DIR ARGS...: python -m llava.data.caption_sets ARGS, unless SET_DIR has its questions and images
  build_set() {
    local set=$1; shift
    if [ -f "$set/questions.jsonl" ] && [ -e "$set/images" ]; then say "have $set"; return 0; fi
    local cmd=("$PYTHON" -m llava.data.caption_sets "$@")
    if dry; then say "would build $set: ${cmd[*]}"; return 0; fi
    "${cmd[@]}"
  }

  section "captions: Karpathy's splits (COCO, Flickr30k)"
  K=$C/karpathy
  get_archive "http://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip" "$K" "" "$K/dataset_coco.json"

  section "captions: coco_karpathy_test (images: COCO val2014)"
  coco_val2014
  build_set "$C/coco_karpathy_test" coco-karpathy --annotations "$K/dataset_coco.json" --images "$E/pope/val2014" \
    --out "$C/coco_karpathy_test"

  section "captions: flickr30k_test"
  if [ -n "${FLICKR30K_IMAGES:-}" ]; then
    build_set "$C/flickr30k_test" flickr30k --annotations "$K/dataset_flickr30k.json" --images "$FLICKR30K_IMAGES" \
      --out "$C/flickr30k_test"
  else
    build_set "$C/flickr30k_test" flickr30k --annotations "$K/dataset_flickr30k.json" --out "$C/flickr30k_test"
    have "$C/flickr30k_test/images" || manual "Flickr30k images are licence-gated: request them at https://shannon.cs.illinois.edu/DenotationGraph/, then rerun with FLICKR30K_IMAGES=<the flickr30k-images folder> (or put the images in $C/flickr30k_test/images/)"
  fi

  section "captions: nocaps_in, nocaps_near, nocaps_out (NoCaps val)"
  N=$C/nocaps
  fetch "https://s3.amazonaws.com/nocaps/nocaps_val_4500_captions.json" "$N/nocaps_val_4500_captions.json"
  dl=("$PYTHON" -m llava.data.caption_sets download-images nocaps --annotations "$N/nocaps_val_4500_captions.json"
      --dest "$N/images")
  if dry; then say "would fetch the 4,500 NoCaps val images: ${dl[*]}"; else "${dl[@]}"; fi
  build_set "$C/nocaps_out" nocaps --annotations "$N/nocaps_val_4500_captions.json" --images "$N/images" --out "$C"

  section "captions: conceptual (Conceptual Captions val)"
  CC=$C/conceptual
  TSV=${CC_VAL_TSV:-$CC/Validation_GCC-1.1.0-Validation.tsv}
  if [ -f "$TSV" ] || { dry && [ -n "${CC_VAL_TSV:-}" ]; }; then
    dl=("$PYTHON" -m llava.data.caption_sets download-images conceptual --annotations "$TSV" --dest "$CC/images")
    if dry; then say "would fetch the images of the TSV's URLs: ${dl[*]}"; else "${dl[@]}"; fi
    build_set "$CC" conceptual --annotations "$TSV" --images "$CC/images" --out "$CC" --drop-missing
  else
    manual "Conceptual Captions val: accept the terms at https://ai.google.com/research/ConceptualCaptions/download, save the validation TSV (caption<TAB>url) as $TSV (or CC_VAL_TSV=<file>) and rerun; images come from their URLs (rows whose image is gone are left out)"
  fi

  section "captions: concadia"
  CD=$C/concadia
  fetch_gdrive 1kiTSiqk7y7JdHssXjoLwcOomC7lhb5k8 "$CD/wiki_split.json"
  get_archive "gdrive:1gDhVlOwcGcwBT5LWYwgn9xEElGlKVpFb" "$CD/resized" "97K images at 256 px"
  build_set "$CD" concadia --annotations "$CD/wiki_split.json" --images "$CD/resized" --out "$CD"
fi

finish
