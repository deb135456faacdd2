#!/usr/bin/env bash
# The abstention sweep on the demo benchmark: each variant of configs/demo.yaml in this folder trained and
# scored in turn (one `make demo`'s time each, about 9 minutes on an idle 2-core machine), then one table.
# Variants register `distill-ner-sweep`, so the demo's `distill-ner` production alias is never touched.
# Only the demo benchmark is scored: settings are chosen without looking at the zero-shot test sets.
#
#   bash configs/sweeps/abstention/run.sh                 # every variant
#   bash configs/sweeps/abstention/run.sh baseline neg8   # some of them
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
HERE=configs/sweeps/abstention
LOGS=.cache/sweeps/abstention
mkdir -p "$LOGS"
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  variants=(baseline neg8 ratio1 ratio2 neg_last no_read_loss neg8_last_no_read steps24
            full_lr1e-4 full_lr3e-4 full_steps24)
fi
for v in "${variants[@]}"; do
  echo "== $v ($(date +%H:%M:%S)), log: $LOGS/$v.log"
  "$BIN/zenml" pipeline run pipelines.distill_ner.distill_ner -c "$HERE/$v.yaml" >"$LOGS/$v.log" 2>&1 \
    || { echo "   $v failed: see $LOGS/$v.log"; exit 1; }
done
# the last runs side by side: the knobs that differ, F1 both ways, abstention and hallucination rates
"$BIN/distill-ner" compare --experiment distill_ner --last "${#variants[@]}" \
  --keys 'negatives|read_reply|per_passage|ratio|method|max_steps|f1|abstention|hallucination|unparseable|tags'
