#!/usr/bin/env bash
# MMBench-CN dev: as mmbench.sh with the Chinese split and prompt.
SPLIT=${SPLIT:-mmbench_dev_cn_20231003} LANG_CODE=cn MMB_DIR=mmbench_cn exec bash "$(dirname "$0")/mmbench.sh" "$@"
