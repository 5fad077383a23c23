#!/usr/bin/env bash
# Trains a small model on XOR with nothing but curl and JSON, printing the loss as it falls.
#
#   clients/curl/train.sh [BASE_URL] [API_KEY]
#
# BASE_URL defaults to $GRADSERVE_BASE_URL, then http://127.0.0.1:8000; API_KEY to
# $GRADSERVE_API_KEY (needed only when the server sets GRADSERVE_API_KEYS). STEPS (env,
# default 100) sets the number of training steps.
set -euo pipefail

BASE_URL="${1:-${GRADSERVE_BASE_URL:-http://127.0.0.1:8000}}"
BASE_URL="${BASE_URL%/}"
API_KEY="${2:-${GRADSERVE_API_KEY:-}}"
STEPS="${STEPS:-100}"

# api METHOD PATH [JSON]: prints the response body; exits with the server's error on a non-2xx.
api() {
  local args=(--silent --show-error --fail-with-body -X "$1" "$BASE_URL$2"
              -H "Content-Type: application/json")
  [[ -n "$API_KEY" ]] && args+=(-H "Authorization: Bearer $API_KEY")
  [[ $# -ge 3 ]] && args+=(--data "$3")
  curl "${args[@]}"
}

# field NAME JSON: the value of the last "NAME": ... in a flat spot of the JSON text.
field() {
  sed -n "s/.*\"$1\":[[:space:]]*\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$2"
}

spec='{
  "layers": [
    {"type": "linear", "in_features": 2, "out_features": 8},
    {"type": "tanh"},
    {"type": "linear", "out_features": 1}
  ],
  "loss": {"type": "bce_with_logits"},
  "optimizer": {"type": "adam", "lr": 0.05},
  "seed": 0
}'
# The four XOR points: the data in tensor objects (section 3 of DESIGN.md), list form.
batch='{
  "inputs":  {"shape": [4, 2], "datatype": "FP32", "data": [0, 0, 0, 1, 1, 0, 1, 1]},
  "targets": {"shape": [4, 1], "datatype": "FP32", "data": [0, 1, 1, 0]}
}'

model_id="$(field id "$(api POST /v1/models "$spec")")"
trap 'api DELETE "/v1/models/$model_id" >/dev/null || true' EXIT
echo "model $model_id created at $BASE_URL"

for ((step = 1; step <= STEPS; step++)); do
  answer="$(api POST "/v1/models/$model_id/train_step" "$batch")"
  if ((step == 1 || step % 15 == 0 || step == STEPS)); then
    echo "step $step loss $(field loss "$answer")"
  fi
done
