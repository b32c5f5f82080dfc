# Shared helpers of scripts/data/*.sh (sourced, not run). Every script reads:
#   DATA_ROOT      where the data goes; relative paths are relative to the repository root
#                  default ./playground/data (what pretrain.sh, lora_instruct_tuning.sh, the recipes and
#                  scripts/eval/*.sh read)
#   DRY_RUN=1      print what would be fetched and where it goes; download, extract and write nothing
#   DOWNLOAD_DIR   archives while they are fetched and extracted       default $DATA_ROOT/.downloads
#   KEEP_ARCHIVES=1  keep the archives once extracted (default: deleted)
#   HF_ENDPOINT    Hugging Face (or a mirror)                          default https://huggingface.co
#   HF_TOKEN       sent to $HF_ENDPOINT when set
#   CHECK=0        skip the final image check (python -m llava.data.inspect ... --image-folder: how many image
#   TOKENIZER      records resolve per subfolder; it needs a tokenizer, default lmsys/vicuna-7b-v1.5)
#   PYTHON         interpreter                                          default python
# What is already there is skipped: a file that exists, a folder that is not empty. An archive is extracted
# into a staging folder and moved into place only when complete, and downloads resume (curl -C -), so an
# interrupted run is simply rerun. Google Drive files need `pip install gdown`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

DATA_ROOT=${DATA_ROOT:-./playground/data}
DATA_ROOT=${DATA_ROOT%/}
DRY_RUN=${DRY_RUN:-0}
DOWNLOAD_DIR=${DOWNLOAD_DIR:-$DATA_ROOT/.downloads}
KEEP_ARCHIVES=${KEEP_ARCHIVES:-0}
HF_ENDPOINT=${HF_ENDPOINT:-https://huggingface.co}
HF_ENDPOINT=${HF_ENDPOINT%/}
CHECK=${CHECK:-1}
TOKENIZER=${TOKENIZER:-lmsys/vicuna-7b-v1.5}
PYTHON=${PYTHON:-python}
MANUAL=()
_SCRIPT=$(basename "$0" .sh)

say() { echo "[data:$_SCRIPT] $*"; }
die() { echo "[data:$_SCRIPT] ERROR: $*" >&2; exit 1; }
dry() { [ "$DRY_RUN" = 1 ]; }

# filled DIR: a folder (or a link to one) with at least one entry.
filled() { [ -d "$1" ] && [ -n "$(find -H "$1" -mindepth 1 -maxdepth 1 -print -quit 2>/dev/null)" ]; }
# have PATH: a non-empty file or a filled folder.
have() { { [ -f "$1" ] && [ -s "$1" ]; } || filled "$1"; }

need() {  # need COMMAND HOW-TO-INSTALL
  dry || command -v "$1" >/dev/null 2>&1 || die "$1 is not installed ($2)"
}

start() {  # start TITLE: the first line of a script's output
  say "$1"
  say "DATA_ROOT=$DATA_ROOT$(dry && echo '   (DRY_RUN=1: nothing is downloaded or written)')"
  dry || { need curl "apt-get install curl"; need unzip "apt-get install unzip"; }
}

section() { echo; say "== $*"; }

manual() {  # manual TEXT: a step this script cannot do (licence-gated, a form, a click-through); listed again at the end
  MANUAL+=("$*")
  say "MANUAL: $*"
}

finish() {
  echo
  if (( ${#MANUAL[@]} )); then
    say "left for you (licence-gated or click-through downloads; rerun this script afterwards):"
    local m
    for m in "${MANUAL[@]}"; do echo "  - $m"; done
  fi
  if dry; then say "dry run: nothing was downloaded"; else say "done"; fi
}

fetch() {  # fetch URL DEST [SIZE]: DEST := the file at URL, unless DEST is there (a partial DEST.part resumes)
  local url=$1 dest=$2 size=${3:-}
  if [ -s "$dest" ]; then say "have $dest"; return 0; fi
  if dry; then
    say "would fetch $url${size:+  [$size]}"
    say "         -> $dest"
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  local auth=()
  if [ -n "${HF_TOKEN:-}" ] && [[ $url == "$HF_ENDPOINT"/* ]]; then auth=(-H "Authorization: Bearer $HF_TOKEN"); fi
  say "fetching $url${size:+  [$size]} -> $dest"
  curl -fL --retry 5 --retry-delay 10 -C - "${auth[@]}" -o "$dest.part" "$url" \
    || die "download failed: $url (rerun to resume)"
  mv "$dest.part" "$dest"
}

try_fetch() {  # try_fetch URL DEST [SIZE] [WHAT-TO-DO-BY-HAND]: fetch, but a failure only adds a manual step
  local url=$1 dest=$2 size=${3:-} hint=${4:-}
  if ( fetch "$url" "$dest" "$size" ); then return 0; fi
  rm -f "$dest.part"
  manual "could not download $url -> $dest${hint:+ ($hint)}"
}

fetch_gdrive() {  # fetch_gdrive FILE_ID DEST [SIZE]: a Google Drive file, with gdown
  local id=$1 dest=$2 size=${3:-}
  if [ -s "$dest" ]; then say "have $dest"; return 0; fi
  if dry; then
    say "would fetch Google Drive file $id (gdown)${size:+  [$size]}"
    say "         -> $dest"
    return 0
  fi
  need gdown "pip install gdown"
  mkdir -p "$(dirname "$dest")"
  say "fetching Google Drive file $id -> $dest"
  gdown "https://drive.google.com/uc?id=$id" -O "$dest.part" \
    || die "Google Drive download failed (often its daily quota): fetch https://drive.google.com/file/d/$id by hand, save it as $dest and rerun"
  mv "$dest.part" "$dest"
}

# unpack ARCHIVE TARGET: TARGET := the archive's content. Lone top-level folders are stripped (train2017.zip's
# train2017/, a zip's data/wikiart/images/), so TARGET holds the files themselves. It is extracted into a
# staging folder next to TARGET and moved into place when complete; into an existing TARGET it is merged (files
# already there are kept). The archive is deleted afterwards unless KEEP_ARCHIVES=1.
unpack() {
  local archive=$1 target=$2
  if dry; then say "would extract $(basename "$archive") -> $target"; return 0; fi
  local stage
  stage="$(dirname "$target")/.$(basename "$target").unpacking"
  rm -rf "$stage"
  mkdir -p "$stage"
  say "extracting $archive -> $target"
  case $archive in
    *.zip) unzip -q -o "$archive" -d "$stage" ;;
    *.tar | *.tar.gz | *.tgz) tar -xf "$archive" -C "$stage" ;;
    *) die "unpack: unknown archive type: $archive" ;;
  esac
  rm -rf "$stage/__MACOSX"
  local top=$stage entries
  while :; do
    mapfile -t entries < <(find "$top" -mindepth 1 -maxdepth 1)
    if [ ${#entries[@]} -eq 1 ] && [ -d "${entries[0]}" ] && [ ! -L "${entries[0]}" ]; then
      top=${entries[0]}
    else
      break
    fi
  done
  [ ${#entries[@]} -gt 0 ] || die "unpack: $archive is empty"
  if [ -e "$target" ]; then
    local file
    while IFS= read -r -d '' file; do
      if [ ! -e "$target/$file" ]; then
        mkdir -p "$(dirname "$target/$file")"
        mv "$top/$file" "$target/$file"
      fi
    done < <(cd "$top" && find . \( -type f -o -type l \) -print0)
  else
    mkdir -p "$(dirname "$target")"
    mv "$top" "$target"
  fi
  rm -rf "$stage"
  [ "$KEEP_ARCHIVES" = 1 ] || rm -f "$archive"
}

# get_archive SOURCE TARGET [SIZE] [DONE]: TARGET := the content of the archive at SOURCE (a URL, or
# gdrive:<file id> for a zip on Google Drive), unless DONE (default TARGET) is already there.
get_archive() {
  local src=$1 target=$2 size=${3:-} done=${4:-$2}
  if have "$done"; then say "have $done"; return 0; fi
  local ext base
  case $src in
    gdrive:*) ext=.zip ;;
    *.tar.gz | *.tgz) ext=.tar.gz ;;
    *) base=${src%%\?*}; ext=.${base##*.} ;;
  esac
  local rel=${target#"$DATA_ROOT"/}
  local archive=$DOWNLOAD_DIR/${rel//\//__}$ext
  case $src in
    gdrive:*) fetch_gdrive "${src#gdrive:}" "$archive" "$size" ;;
    *) fetch "$src" "$archive" "$size" ;;
  esac
  unpack "$archive" "$target"
}

link_dir() {  # link_dir LINK TARGET: LINK -> TARGET as a relative symlink (the same files, stored once)
  local link=$1 target=$2
  if [ -L "$link" ] || filled "$link"; then say "have $link"; return 0; fi
  if dry; then say "would link $link -> $target"; return 0; fi
  mkdir -p "$(dirname "$link")"
  [ -d "$link" ] && rmdir "$link"
  ln -s "$(realpath -m --relative-to="$(dirname "$link")" "$target")" "$link"
  say "linked $link -> $(readlink "$link")"
}

# check_images DATA_FILE IMAGE_FOLDER [TEMPLATE]: what training's up-front image check prints (records found
# and missing per top-level subfolder), by python -m llava.data.inspect. It tokenizes every record: minutes on
# the large files. Never fatal: a missing tokenizer or data file only says so.
check_images() {
  local data=$1 folder=$2 template=${3:-v1}
  local cmd=("$PYTHON" -m llava.data.inspect --data-path "$data" --model-name-or-path "$TOKENIZER"
             --version "$template" --image-folder "$folder" --jsonl /dev/null)
  if [ "$CHECK" = 0 ]; then say "image check skipped (CHECK=0): ${cmd[*]}"; return 0; fi
  if dry; then say "would check images: ${cmd[*]}"; return 0; fi
  if [ ! -f "$data" ]; then say "image check skipped: $data is not there"; return 0; fi
  mkdir -p "$DOWNLOAD_DIR"
  local log
  log="$DOWNLOAD_DIR/check_$(basename "$data").log"
  say "checking images: ${cmd[*]}"
  if "${cmd[@]}" > "$log" 2>&1; then
    sed -n '/^--- /,$p' "$log" | grep -v '^    ' || true
  else
    say "image check did not run (exit $?; TOKENIZER=$TOKENIZER): last lines of $log:"
    tail -n 5 "$log"
  fi
}

# fetch_member URL DEST [SIZE]: DEST := the file of that name inside the zip at URL (the zip is then deleted).
fetch_member() {
  local url=$1 dest=$2 size=${3:-}
  if have "$dest"; then say "have $dest"; return 0; fi
  local name zip
  name=$(basename "$dest")
  zip=$DOWNLOAD_DIR/$(basename "${url%%\?*}")
  fetch "$url" "$zip" "$size"
  if dry; then say "would extract $name from $(basename "$zip") -> $dest"; return 0; fi
  local stage=$DOWNLOAD_DIR/.member
  rm -rf "$stage"
  mkdir -p "$stage" "$(dirname "$dest")"
  unzip -q -j -o "$zip" "*$name" -d "$stage" || die "no $name in $zip"
  mv "$stage/$name" "$dest"
  rm -rf "$stage"
  [ "$KEEP_ARCHIVES" = 1 ] || rm -f "$zip"
}

# hf_dataset REPO DEST [SIZE]: DEST := a snapshot of the Hugging Face dataset repo REPO (huggingface_hub).
hf_dataset() {
  local repo=$1 dest=$2 size=${3:-}
  if dry; then
    say "would fetch the Hugging Face dataset $repo (huggingface_hub.snapshot_download)${size:+  [$size]}"
    say "         -> $dest"
    return 0
  fi
  say "fetching the Hugging Face dataset $repo -> $dest"
  HF_ENDPOINT=$HF_ENDPOINT "$PYTHON" -c 'import sys; from huggingface_hub import snapshot_download
snapshot_download(repo_id=sys.argv[1], repo_type="dataset", local_dir=sys.argv[2])' "$repo" "$dest" \
    || die "could not fetch the dataset $repo (pip install huggingface_hub; HF_TOKEN for gated sets)"
}
