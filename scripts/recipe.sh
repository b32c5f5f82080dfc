# Named training recipes, shared by pretrain.sh (stage 1) and lora_instruct_tuning.sh (stage 2); sourced by them
# BEFORE their `: "${VAR:=default}"` lines. `RECIPE=<name> bash pretrain.sh` reads scripts/recipes/<name>.env.
#
# Precedence, per variable: your environment > the recipe > the script's default. A recipe only fills in the
# variables that are unset when the script starts, so `RECIPE=sqllava-star-7b MODEL=/my/lm bash ...` trains
# /my/lm (a variable set to empty counts as set: `VIT_LORA=` still switches ViT LoRA off).
#
# A recipe file holds comments and `NAME=value` lines only (values: letters, digits and _ . / : + , = @ % -,
# optionally in quotes; no expansions), so it also reads as plain shell:
#   STAGES="1 2"          the stages it is made for (1: pretrain.sh, 2: lora_instruct_tuning.sh); required
#   NAME=value            for every stage in STAGES
#   STAGE1_NAME=value     for stage 1 only (STAGE2_NAME: stage 2); wins over NAME=value in the same file
# NAME must be one of the stage's recipe variables below (a typo is an error, not silently ignored). Leave out what
# a script derives from another variable (stage 2's PROJECTOR and VIT_LORA follow PRETRAIN_DIR), so that a user's
# own PRETRAIN_DIR carries them along.
#
# Defines `load_recipe STAGE`, `recipe_show PATH`, RECIPE_FILE (empty without RECIPE) and RECIPE_KEPT (the
# variables your environment kept from the recipe), which launch.sh's `[launch] recipe ...` line reports.

RECIPE_DIR=${RECIPE_DIR:-$HERE/scripts/recipes}  # RECIPE_DIR: a folder of your own recipes instead
RECIPE_SCRIPT_1=pretrain.sh
RECIPE_SCRIPT_2=lora_instruct_tuning.sh
# What a recipe may set: the settings of a training run (not the machine: NUM_GPUS, DEVICE, RESUME, ... stay yours).
RECIPE_VARS_1="MODEL VISION_TOWER DATA_PATH IMAGE_FOLDER OUTPUT_DIR PROJECTOR VIT_LORA VIT_LORA_R VIT_LORA_ALPHA \
  VISION_TOWER_LR LR EPOCHS IMAGE_ASPECT_RATIO PER_DEVICE_BATCH GLOBAL_BATCH DS_CONFIG SAVE_STEPS SAVE_TOTAL_LIMIT"
RECIPE_VARS_2="MODEL VISION_TOWER DATA_PATH IMAGE_FOLDER OUTPUT_DIR PRETRAIN_DIR PROJECTOR VIT_LORA VIT_LORA_R \
  VIT_LORA_ALPHA VISION_TOWER_LR PROJECTOR_LR LORA_R LORA_ALPHA SQ_R LR EPOCHS IMAGE_ASPECT_RATIO PER_DEVICE_BATCH \
  GLOBAL_BATCH DS_CONFIG SAVE_STEPS SAVE_TOTAL_LIMIT"

recipe_error() { echo "error: $*" >&2; exit 2; }
recipe_show() { echo "${1#"$HERE"/}"; }  # a path, relative to the repository where it lies inside

# _recipe_read FILE: its assignments into _RECIPE_KEYS / _RECIPE_VALUES (file order); an error on any other line.
_recipe_read() {
  local file=$1 line lineno=0 key rhs
  local re_line='^([A-Z][A-Z0-9_]*)=([^[:space:]]*|"[^"]*"|'"'"'[^'"'"']*'"'"')([[:space:]]+#.*)?$'
  local re_value='^[A-Za-z0-9_./:+,=@%-]*$' re_quoted='^[A-Za-z0-9_./:+,=@% -]*$'
  _RECIPE_KEYS=() _RECIPE_VALUES=()
  while IFS= read -r line || [[ -n $line ]]; do
    lineno=$((lineno + 1))
    line="${line#"${line%%[![:space:]]*}"}"  # leading blanks
    [[ -z $line || $line == \#* ]] && continue
    [[ $line =~ $re_line ]] || recipe_error "$(recipe_show "$file"):$lineno: not a NAME=value line: $line"
    key=${BASH_REMATCH[1]} rhs=${BASH_REMATCH[2]}
    if [[ $rhs == \"*\" || $rhs == \'*\' ]]; then
      rhs=${rhs:1:${#rhs}-2}
      [[ $rhs =~ $re_quoted ]] || recipe_error "$(recipe_show "$file"):$lineno: the value may hold letters, digits, spaces and _ . / : + , = @ % - only: $line"
    else
      [[ $rhs =~ $re_value ]] || recipe_error "$(recipe_show "$file"):$lineno: the value may hold letters, digits and _ . / : + , = @ % - only (quote it for spaces): $line"
    fi
    _RECIPE_KEYS+=("$key") _RECIPE_VALUES+=("$rhs")
  done < "$file"
}

# _recipe_stages FILE: its STAGES value ("1", "2" or "1 2"), checked.
_recipe_stages() {
  local i stages="" seen=0
  _recipe_read "$1"
  for i in "${!_RECIPE_KEYS[@]}"; do
    [[ ${_RECIPE_KEYS[i]} == STAGES ]] && { stages=${_RECIPE_VALUES[i]}; seen=1; }
  done
  ((seen)) || recipe_error "$(recipe_show "$1"): no STAGES= line (STAGES=\"1 2\", \"1\" or \"2\": the stages the recipe is for)"
  [[ $stages =~ ^(1|2|1\ 2)$ ]] || recipe_error "$(recipe_show "$1"): STAGES=\"$stages\" must be \"1\", \"2\" or \"1 2\""
  _RECIPE_STAGES=$stages
}

# recipe_list STAGE: the names of the recipes for that stage, comma-separated.
recipe_list() {
  local file names=""
  for file in "$RECIPE_DIR"/*.env; do
    [[ -f $file ]] || continue
    _recipe_stages "$file"
    [[ " $_RECIPE_STAGES " == *" $1 "* ]] && names+="${names:+, }$(basename "$file" .env)"
  done
  echo "${names:-none}"
}

# _recipe_available: both stages' recipe lists, for the error messages.
_recipe_available() {
  echo "recipes for $RECIPE_SCRIPT_1: $(recipe_list 1); for $RECIPE_SCRIPT_2: $(recipe_list 2)"
}

# load_recipe STAGE (1 or 2): apply $RECIPE's variables that the environment leaves unset; nothing without RECIPE.
load_recipe() {
  local stage=$1 script_var="RECIPE_SCRIPT_$1" i key name value pass vars applied=" " seen=" "
  local script=${!script_var}
  RECIPE_FILE="" RECIPE_KEPT=""
  [[ -n ${RECIPE:-} ]] || return 0
  [[ $RECIPE =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ && -f $RECIPE_DIR/$RECIPE.env ]] ||
    recipe_error "RECIPE=$RECIPE: no such recipe ($(recipe_show "$RECIPE_DIR/$RECIPE.env")); $(_recipe_available)"
  RECIPE_FILE=$RECIPE_DIR/$RECIPE.env
  _recipe_stages "$RECIPE_FILE"
  local shown; shown=$(recipe_show "$RECIPE_FILE")
  if [[ " $_RECIPE_STAGES " != *" $stage "* ]]; then
    local other_var="RECIPE_SCRIPT_$_RECIPE_STAGES"
    recipe_error "RECIPE=$RECIPE is a recipe for ${!other_var} (stage $_RECIPE_STAGES), not for $script; $(_recipe_available)"
  fi
  # every line names a variable of the stage(s) it is for, once
  for key in "${_RECIPE_KEYS[@]}"; do
    [[ $seen != *" $key "* ]] || recipe_error "$shown sets $key twice"
    seen+="$key "
    [[ $key == STAGES ]] && continue
    if [[ $key =~ ^STAGE([12])_(.+)$ ]]; then
      i=${BASH_REMATCH[1]} name=${BASH_REMATCH[2]} vars="RECIPE_VARS_${BASH_REMATCH[1]}"
      [[ " $_RECIPE_STAGES " == *" $i "* ]] ||
        recipe_error "$shown sets $key but its STAGES=\"$_RECIPE_STAGES\" leaves out stage $i"
      [[ " ${!vars} " == *" $name "* ]] ||
        recipe_error "$shown sets $key, but stage $i has no $name; a recipe may set: $(_recipe_words "${!vars}")"
    else
      for i in $_RECIPE_STAGES; do
        vars="RECIPE_VARS_$i"
        [[ " ${!vars} " == *" $key "* ]] ||
          recipe_error "$shown sets $key for every stage, but stage $i has no $key (STAGE$((3 - i))_$key?); a recipe may set: $(_recipe_words "${!vars}")"
      done
    fi
  done
  # the stage's own lines first (they win over the shared ones), each only where the environment has no value
  for pass in "STAGE${stage}_" ""; do
    for i in "${!_RECIPE_KEYS[@]}"; do
      key=${_RECIPE_KEYS[i]} value=${_RECIPE_VALUES[i]}
      if [[ -n $pass ]]; then
        [[ $key == "$pass"* ]] || continue
        name=${key#"$pass"}
      else
        [[ $key == STAGES || $key == STAGE[12]_* ]] && continue
        name=$key
      fi
      [[ $applied == *" $name "* ]] && continue  # the stage's own line has set it
      if [[ -n ${!name+x} ]]; then
        [[ " $RECIPE_KEPT " == *" $name "* ]] || RECIPE_KEPT+="${RECIPE_KEPT:+ }$name"
      else
        printf -v "$name" '%s' "$value"
        applied+="$name "
      fi
    done
  done
}

_recipe_words() { local words; read -ra words <<< "$1"; echo "${words[*]}"; }
