#!/usr/bin/env bash
# Sweep students on the zero-shot sets the recipe never chose a setting on: 200 seeded sentences each of
# CrossNER-AI and MIT-Restaurant, 64 new tokens, free and grounded, one `evaluate_ner` run per model, then
# one `distill-ner compare` table. Reporting only: settings are chosen on the demo benchmark (run.sh).
#
#   bash configs/sweeps/abstention/zero_shot.sh models:/distill-ner-sweep/1 models:/distill-ner-sweep/6
#   GROUNDED_ALSO=false bash configs/sweeps/abstention/zero_shot.sh ...   (the free pass only: half the time)
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
GROUNDED_ALSO=${GROUNDED_ALSO:-true}
LOGS=.cache/sweeps/abstention
mkdir -p "$LOGS"
[ $# -gt 0 ] || { echo "usage: $0 MODEL_URI..." >&2; exit 2; }
for model in "$@"; do
  name=$(printf '%s' "$model" | tr -c 'A-Za-z0-9._-' '_')
  config="$LOGS/zero_shot-$name.yaml"
  # one evaluate_ner config per model (ZenML takes parameters from a file)
  cat >"$config" <<YAML
run_name: zero-shot-$name-{date}-{time}
parameters:
  config:
    model: $model
    eval:
      benchmarks: [crossner_ai, mit_restaurant]
      max_sentences: 200
      seed: 0
      max_new_tokens: 64
      batch_size: 16
      grounded_also: $GROUNDED_ALSO
YAML
  echo "== $model ($(date +%H:%M:%S)), log: $LOGS/zero_shot-$name.log"
  "$BIN/zenml" pipeline run pipelines.evaluate_ner.evaluate_ner -c "$config" >"$LOGS/zero_shot-$name.log" 2>&1 \
    || { echo "   $model failed: see $LOGS/zero_shot-$name.log"; exit 1; }
done
"$BIN/distill-ner" compare --experiment evaluate_ner --last "$#" \
  --keys 'eval.model|eval.backend|f1|abstention|hallucination|unparseable'
