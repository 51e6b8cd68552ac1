#!/usr/bin/env bash
# One session of the accuracy campaign on this machine's CPU (docs/training.md, "Training
# that accumulates"), as one command, so that every session runs the same recipe:
#
#   1. render new packs (new seeds, so new people and poses),
#   2. read the training packs once, so that the first cycle does not wait on the disk,
#   3. frozen training cycles that continue the shipped model (a fresh AdamW),
#   4. score each cycle's endpoint on the held-out set and build the candidate registered
#      in docs/training.md: the shipped model at weight w (SHIPPED_WEIGHT, 1/2 by default,
#      or "val": the best of SOUP_GRID on a validation set, never the held-out one) and the
#      endpoints sharing the rest; also, reported and never shipped, the endpoints' average
#      and the uniform average of all,
#   5. only if the candidate beats the shipped model's held-out score: ship it (the store's
#      default, with its metrics and its own blendshape thresholds), and redo the real-photo
#      numbers, the pictures and the accuracy table of docs/,
#   6. render the next session's packs (NEXT_PACKS), shipped or not, so that the next
#      session's training starts at once; the session's own work goes on beside it.
#
#     TAG=u NEW_PACKS="v:pack_v8:11:40000 legacy:pack_legacy5:12:30000" \
#     TRAIN_PACKS="pack_v7 pack_legacy4 pack_v8 pack_legacy5" CYCLES=30,30,25,20 \
#       bash tools/cpu_session.sh
#
# Knobs (environment): TAG (required: names the endpoints jmlr_mnv2_128_cpu_<TAG>_c<k>
# and the folder runs/session_<TAG>), NEW_PACKS (SPEC:NAME:SEED:IMAGES[:SIZE], SPEC v or
# legacy, SIZE the stored crop's side, 160 px by default (184: the 128 px training crop at
# the rendered resolution); written to data/NAME, kept when it is complete, resumed when it is
# not (the same SPEC and SIZE, or jmlr pack refuses); pack seeds used so
# far: 1-3 and 5-20),
# NEXT_PACKS (the same form: rendered at the end, for the next session), TRAIN_PACKS (names under
# data/), CYCLES (minutes), MODEL (jmlr_mnv2_128_cpu), LR (1.5e-4), FREEZE, FREEZE_BN (false:
# true puts the frozen layers' BatchNorm on its running statistics, docs/training.md), HELDOUT
# (data/synth_test: made with the seed-777 command of docs/accuracy.md when missing or cut off), OUT
# (runs/session_<TAG>), BS_CACHE (runs/bs_cache.npz: the blendshape benchmark's renders),
# SHIPPED_WEIGHT (0.5, or val), SOUP_GRID ("0.5 0.6 0.7 0.8": the weights val tries),
# VALIDATION (data/synth_val: the held-out command with seed 778, made when val needs it),
# VALIDATION_SEED (778), VALIDATION_SUBJECTS (40, 33 renders each: more resolve a flatter grid).
# Exit status: 0 shipped, 3 trained but not better (nothing shipped), other: an error.
# PRINT_ONLY=1 prints the commands instead of running them (tests/test_cpu_session.py).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${TAG:?set TAG, e.g. TAG=u}"
NEW_PACKS="${NEW_PACKS:-}"
NEXT_PACKS="${NEXT_PACKS:-}"
TRAIN_PACKS="${TRAIN_PACKS:?set TRAIN_PACKS, names under data/}"
CYCLES="${CYCLES:-30,30,25,20}"
MODEL="${MODEL:-jmlr_mnv2_128_cpu}"
LR="${LR:-0.00015}"
FREEZE="${FREEZE:-[stem,blocks.0,blocks.1,blocks.2]}"
FREEZE_BN="${FREEZE_BN:-false}"
HELDOUT="${HELDOUT:-data/synth_test}"
SHIPPED_WEIGHT="${SHIPPED_WEIGHT:-0.5}"
SOUP_GRID="${SOUP_GRID:-0.5 0.6 0.7 0.8}"
VALIDATION="${VALIDATION:-data/synth_val}"
VALIDATION_SEED="${VALIDATION_SEED:-778}"
VALIDATION_SUBJECTS="${VALIDATION_SUBJECTS:-40}"
PY="${PY:-.venv/bin/python}"
J="${J:-.venv/bin/jmlr}"
OUT="${OUT:-runs/session_$TAG}"
BS_CACHE="${BS_CACHE:-runs/bs_cache.npz}"
DESC="JMLR, MobileNetV2 1.0 initialised from CenterFace, continued at 128 px crops, with an expression head; \
trained on 2 CPU cores; the weight average of the endpoints of successive training cycles (docs/training_log.md)"

exec 3>&1  # PRINT_ONLY prints here, past a command's own redirections
run() {
  if [ "${PRINT_ONLY:-0}" = 1 ]; then printf '%q ' "$@" >&3; echo >&3; else "$@"; fi
}
say() { echo "$(date -u +%H:%M:%S) cpu_session: $*"; }
score() { "$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['score'])" "$1"; }
below() { "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$1" "$2"; }
# The soup's weights: w on the shipped model, the rest shared by the n endpoints.
soup_weights() {
  "$PY" -c "import sys; w, n = float(sys.argv[1]), int(sys.argv[2]); print(' '.join([repr(w)] + [repr((1 - w) / n)] * n))" "$1" "$2"
}
pack_complete() {
  "$PY" -c "import sys; from jmlr.data.packed import read_pack_info as r; i = r(sys.argv[1]); \
sys.exit(0 if len(i['complete']) == len(i['chunks']) else 1)" "$1" 2>/dev/null
}
render_packs() {
  local item spec name seed images size
  for item in "$@"; do
    IFS=: read -r spec name seed images size <<< "$item"
    size="${size:-160}"
    if [ -d "data/$name" ] && pack_complete "data/$name"; then say "data/$name exists: kept"; continue; fi
    # An unfinished pack (a session that ended while it rendered) is resumed, never trained on.
    say "pack data/$name ($spec, seed $seed, $images crops of $size px)$([ -d "data/$name" ] && echo ": resumed")"
    case "$spec" in
      v) run "$J" pack --out "data/$name" --images "$images" --size "$size" --zoom 0.7 --seed "$seed" --batch 16 \
           --workers 2 --no-progress ;;
      legacy) run "$J" pack --out "data/$name" --images "$images" --size "$size" --zoom 0.7 --seed "$seed" \
                --heads legacy --world legacy --workers 2 --no-progress ;;
    esac
  done
}
# A scored set: the held-out command of docs/accuracy.md with its own seed and people. jmlr synth
# writes list/all.csv last, so a set without it was cut off (a session that ended while it
# rendered): rendered again, since evaluating it would fail after the training.
render_set() {
  local dir="$1" what="$2" seed="$3" subjects="$4"
  [ -f "$dir/list/all.csv" ] && return
  say "$what set $dir (seed $seed, $subjects people, legacy heads and world)$([ -d "$dir" ] && echo ": unfinished, rendered again")"
  [ ! -d "$dir" ] || run rm -rf "$dir"
  run env JMLR_SYNTH_HEADS=legacy JMLR_SYNTH_WORLD=legacy "$J" synth --out "$dir" --subjects "$subjects" \
    --per-subject 33 --seed "$seed" --renderer torch
}
# Every SPEC:NAME:SEED:IMAGES[:SIZE] well formed, and no seed twice: a seed fixes the people.
check_specs() {
  local item spec name seed images size seen=" "
  for item in "$@"; do
    IFS=: read -r spec name seed images size <<< "$item"
    case "$spec" in
      v|legacy) ;;
      *) echo "cpu_session: unknown pack spec $spec (v or legacy)" >&2; exit 2 ;;
    esac
    [[ -n "$name" && "$seed" =~ ^[0-9]+$ && "$images" =~ ^[1-9][0-9]*$ && "${size:-160}" =~ ^[1-9][0-9]*$ ]] \
      || { echo "cpu_session: a pack is SPEC:NAME:SEED:IMAGES[:SIZE], not $item" >&2; exit 2; }
    # The 128 px training crop is warped from the stored one: a pack stored smaller cannot feed it.
    (( ${size:-160} >= 128 )) || { echo "cpu_session: $name: SIZE $size is under the 128 px training crop" >&2; exit 2; }
    [[ "$seen" != *" $seed "* ]] || { echo "cpu_session: pack seed $seed given twice" >&2; exit 2; }
    seen+="$seed "
  done
}
case "$SHIPPED_WEIGHT" in
  val) ;;
  *) below "$SHIPPED_WEIGHT" 1 && ! below "$SHIPPED_WEIGHT" 0 \
       || { echo "cpu_session: SHIPPED_WEIGHT must be in [0, 1) or val, not $SHIPPED_WEIGHT" >&2; exit 2; } ;;
esac

# The weight is chosen on other people than those it is scored on.
[[ "$VALIDATION_SEED" =~ ^[0-9]+$ && "$VALIDATION_SEED" != 777 && "$VALIDATION_SUBJECTS" =~ ^[1-9][0-9]*$ ]] \
  || { echo "cpu_session: VALIDATION_SEED must be a seed other than the held-out set's 777, and" \
         "VALIDATION_SUBJECTS a count, not $VALIDATION_SEED and $VALIDATION_SUBJECTS" >&2; exit 2; }
# shellcheck disable=SC2086  # lists of SPEC:NAME:SEED:IMAGES
check_specs $NEW_PACKS $NEXT_PACKS
export JMLR_FACEMODEL="${JMLR_FACEMODEL:-../shared/facemodel/ict_facekit.npz}"
mkdir -p "$OUT"

render_set "$HELDOUT" held-out 777 40
[ "$SHIPPED_WEIGHT" != val ] || render_set "$VALIDATION" validation "$VALIDATION_SEED" "$VALIDATION_SUBJECTS"

# 1. New packs. Those named in an earlier session's NEXT_PACKS are there already: kept (or
#    finished, if that session ended while they rendered).
# shellcheck disable=SC2086
render_packs $NEW_PACKS

packs=()
for name in $TRAIN_PACKS; do packs+=("data/$name"); done

# 2. Into the page cache (a cold cache cost a fifth of the rate, docs/training.md).
if [ "${PRINT_ONLY:-0}" != 1 ]; then
  for p in "${packs[@]}"; do cat "$p"/chunk_*/* > /dev/null; done
fi

# 3. The cycles. The shipped model is copied first: step 5 replaces it.
shipped="$OUT/shipped"
[ -d "$shipped" ] || run cp -r "model_store/$MODEL" "$shipped"
say "training cycles $CYCLES on ${packs[*]}"
run "$J" train --config cpu_mnv2_96 --packs "${packs[@]}" --init "$shipped" --set input_size=128 \
  --set optim.lr="$LR" --set "freeze=$FREEZE" --set "freeze_bn=$FREEZE_BN" --cycles "$CYCLES" --out "$OUT/train" \
  --store-dir "$OUT/store" --export "${MODEL}_$TAG" --set progress=false

# 4. Scores and the candidate.
n_cycles=$(tr ',' '\n' <<< "$CYCLES" | grep -c .)
ends=()
for k in $(seq 1 "$n_cycles"); do ends+=("$OUT/store/${MODEL}_${TAG}_c$k"); done
if [ "$SHIPPED_WEIGHT" = val ]; then
  # The weight is chosen where the ship decision is not made: on the validation set.
  w_best="" s_best=""
  for w in $SOUP_GRID; do
    # shellcheck disable=SC2046  # a list of numbers
    run "$J" average "$shipped" "${ends[@]}" --weights $(soup_weights "$w" "$n_cycles") --name "soup_w$w" \
      --store "$OUT/store" --overwrite
    run "$J" eval --model "$OUT/store/soup_w$w" --data "$VALIDATION" --json "$OUT/val_soup_w$w.json"
    if [ "${PRINT_ONLY:-0}" != 1 ]; then
      s=$(score "$OUT/val_soup_w$w.json")
      say "validation score with the shipped model at $w: $s"
      if [ -z "$w_best" ] || below "$s" "$s_best"; then w_best=$w s_best=$s; fi
    fi
  done
  w_shipped="${w_best:-${SOUP_GRID%% *}}"  # PRINT_ONLY: the grid's first
  say "weight on the shipped model, chosen on $VALIDATION: $w_shipped"
else
  w_shipped="$SHIPPED_WEIGHT"
fi
weights=$(soup_weights "$w_shipped" "$n_cycles")
[ -f "$OUT/eval_shipped.json" ] || run "$J" eval --model "$shipped" --data "$HELDOUT" --json "$OUT/eval_shipped.json"
for k in $(seq 1 "$n_cycles"); do
  run "$J" eval --model "${ends[$((k - 1))]}" --data "$HELDOUT" --json "$OUT/eval_c$k.json"
done
# shellcheck disable=SC2086  # $weights is a list of numbers
run "$J" average "$shipped" "${ends[@]}" --weights $weights --name candidate --store "$OUT/store" --overwrite \
  --description "$DESC"
run "$J" average "${ends[@]}" --name endpoints --store "$OUT/store" --overwrite
run "$J" average "$shipped" "${ends[@]}" --name uniform --store "$OUT/store" --overwrite
for m in candidate endpoints uniform; do
  run "$J" eval --model "$OUT/store/$m" --data "$HELDOUT" --json "$OUT/eval_$m.json"
done
if [ "${PRINT_ONLY:-0}" != 1 ]; then
  before=$(score "$OUT/eval_shipped.json"); after=$(score "$OUT/eval_candidate.json")
  say "held-out score: shipped $before, candidate $after"
  if ! below "$after" "$before"; then
    say "the candidate does not beat the shipped model: nothing shipped"
    # shellcheck disable=SC2086
    render_packs $NEXT_PACKS
    exit 3
  fi
fi

# 5. Ship, then what docs/ shows of the model.
say "shipping"
run "$J" eval --model "$OUT/store/candidate" --data "$HELDOUT" --flip-tta --json "$OUT/eval_candidate_flip.json"
# shellcheck disable=SC2086
run "$J" average "$shipped" "${ends[@]}" --weights $weights --name "$MODEL" --overwrite --set-default \
  --metrics "$OUT/eval_candidate.json" --description "$DESC"
run "$PY" bench/bench_blendshapes.py --model "$MODEL" --test 320 --val 160 --cache "$BS_CACHE" \
  --write-thresholds > "$OUT/blendshapes.txt" 2>&1
run "$PY" bench/real_faces.py --model "model_store/$MODEL" --json docs/eval/real_faces.json \
  --overlay docs/real_faces.jpg --outline-sheet docs/landmarks_outline.jpg > "$OUT/real_faces.txt" 2>&1
run "$PY" bench/real_faces.py --model "model_store/$MODEL" --flip-tta --json docs/eval/real_faces_flip.json > /dev/null 2>&1
run "$PY" bench/real_faces.py --model "model_store/$MODEL" --refine 1 --json docs/eval/real_faces_refine1.json > /dev/null 2>&1
run env JMLR_LANDMARKS_68_OUTLINE=false "$PY" bench/real_faces.py --model "model_store/$MODEL" \
  --json docs/eval/real_faces_fixed.json > /dev/null 2>&1
run "$PY" docs/make_pictures.py
run "$PY" docs/make_accuracy.py --data "$HELDOUT" --store model_store
run env JMLR_DEMO_SCREENSHOT=docs/demo_page.png "$PY" -m pytest -q tests/test_demo_page.py
say "shipped; next: the rows of docs/training_log.csv, python docs/make_learning_curve.py, the numbers in README and docs/"
# 6. The next session's packs, so that its training starts at once (docs/training.md).
# shellcheck disable=SC2086
render_packs $NEXT_PACKS
[ -z "$NEXT_PACKS" ] || say "the next session's packs are rendered"
