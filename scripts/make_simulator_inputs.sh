#!/usr/bin/env bash
# The shipped profiles and per-input workloads of `splitasr simulate` (docs/planner.md, "Simulator").
# Run on an IDLE machine (times are what is measured): estimated 7-9 minutes on 2 idle cores
# (the development run, REPEATS=1 INPUTS=40, took 5.3 CPU-minutes; Whisper per-input dominates).
#   scripts/make_simulator_inputs.sh [OUT_DIR]       (default: splitasr/planner/data)
# Environment: LENGTHS (1,2,4,8), REPEATS (3), INPUT_REPEATS (3: per-input times are medians of passes), GAP_S (0), INPUTS (50 per model), CLOUD_THREADS (2),
# PY (python), DATA (data/corpus), ONLY (a model name: that model alone).
set -euo pipefail
OUT=${1:-splitasr/planner/data}
PY=${PY:-python}
DATA=${DATA:-data/corpus}
LENGTHS=${LENGTHS:-1,2,4,8}
REPEATS=${REPEATS:-3}
INPUT_REPEATS=${INPUT_REPEATS:-3}
GAP_S=${GAP_S:-0}  # idle before each edge run, profile and per-input (validate_planner.py spaces inputs 1.5 s)
INPUTS=${INPUTS:-50}
CLOUD_THREADS=${CLOUD_THREADS:-2}
ONLY=${ONLY:-}
splitasr() { "$PY" -c "from splitasr.cli import main; main()" "$@"; }
mkdir -p "$OUT/profiles" "$OUT/workloads"
# model | manifest | split points | activation codecs | audio codecs
while IFS='|' read -r model manifest points codecs audio; do
  if [ -n "$ONLY" ] && [ "$ONLY" != "$model" ]; then continue; fi
  sel=(--points "$points" --codecs "$codecs" --audio-codecs "$audio")
  # edge: one thread, an emulated device 4x slower than this machine; cloud: 2 threads
  splitasr profile --role edge --model "$model" --threads 1 --slowdown 4 --lengths "$LENGTHS" \
    --repeats "$REPEATS" --gap-s "$GAP_S" "${sel[@]}" --out "$OUT/profiles/$model-edge.json"
  splitasr profile --role cloud --model "$model" --threads "$CLOUD_THREADS" --lengths "$LENGTHS" \
    --repeats "$REPEATS" "${sel[@]}" --out "$OUT/profiles/$model-cloud.json"
  splitasr profile --per-input --manifest "$DATA/$manifest" --limit "$INPUTS" --role edge --model "$model" \
    --threads 1 --slowdown 4 --repeats "$INPUT_REPEATS" --gap-s "$GAP_S" "${sel[@]}" --out "$OUT/workloads/$model-edge.json"
  splitasr profile --per-input --manifest "$DATA/$manifest" --limit "$INPUTS" --role cloud --model "$model" \
    --threads "$CLOUD_THREADS" --repeats "$INPUT_REPEATS" "${sel[@]}" --out "$OUT/workloads/$model-cloud.json"
done <<'MODELS'
ds2|test_sentences_heldout_voices.jsonl|audio,conv,proj,gru1|q8+ans,deepcod+ans,lrd@0+ans,lrd@1+ans,lrd@2+ans|pcm16+pack,opus12+pack,bnf+ans
whisper-tiny.en|test_digits_heldout_speaker.jsonl|audio,features,stem,block2|dct50+ans,q8+ans,deepcod+ans,lrd@0+ans,lrd@1+ans,lrd@2+ans|pcm16+pack,opus12+pack
MODELS
