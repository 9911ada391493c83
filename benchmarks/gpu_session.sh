#!/usr/bin/env bash
# One prepared GPU session for issue 25 (paper-size speed), about 9 minutes on one H100/H200:
#
#   bash benchmarks/gpu_session.sh                      # from the repository root, on the GPU box
#   GPU_SESSION_DRY=1 bash benchmarks/gpu_session.sh    # the same steps, tiny, on the CPU
#
# Steps, in order of importance, each under `timeout` with its own budget (time a step leaves
# unused goes to the steps after it; the whole stays under GPU_SESSION_BUDGET seconds, 540):
#   0. setup: carried wheels for the pure-python packages the image lacks (shared/wheels or
#      .whl: geomloss, opensimplex, open_clip_torch, ftfy, wcwidth, grad-cam, ttach), installed
#      into /tmp/site only where the module is missing; `pip install --no-deps
#      --no-build-isolation -e .`; versions and nvidia-smi
#   1. benchmarks/train_step.py --preset paper --device cuda --no-compile  (every eager local
#      loss; a table even if the compiled run below runs out of time)
#   2. benchmarks/train_step.py --preset paper --device cuda  (eager and torch.compile)
#      (where train_step.py has a --local-impl option, steps 1-2 run once per implementation)
#   3. benchmarks/inference_speed.py --methods all --preset paper --device cuda --batch 64,256
#      --json $OUT/inference.json  (the JSON is rewritten after every row)
#   4. benchmarks/anomaly_speed.py --network paper --device cuda --batch 16 --steps 20
#   5. benchmarks/cam_speed.py --arch densenet121 --size 320 on cuda
# The wheels are not in git (shared/ is excluded locally; it travels to the device machine
# anyway): make them first on a machine with the registry,
#   pip download --no-deps -d shared/wheels geomloss opensimplex open_clip_torch ftfy wcwidth \
#       grad-cam ttach
# Everything is written under $OUT (at most 8 files): setup.log, train_step_eager.log,
# train_step.log, inference.log, inference.json, anomaly.log, cam.log, summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=${GPU_SESSION_DRY:-0}
[ "$DRY" = 0 ] && DRY=
if [ -n "$DRY" ]; then
  OUT=${OUT:-$(mktemp -d /tmp/gpu-session-dry-XXXXXX)}
  if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
  DEVICE=cpu
  TOTAL=${GPU_SESSION_BUDGET:-300}
else
  OUT=${OUT:-results/gpu-session}
  DEVICE=cuda
  TOTAL=${GPU_SESSION_BUDGET:-540}
fi
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
export HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
START=$SECONDS
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

# budgets (s), in step order; a step's timeout = time left - the budgets of the steps after it
if [ -n "$DRY" ]; then
  B_SETUP=20 B_TRAIN_EAGER=40 B_TRAIN=40 B_INFER=90 B_ANOMALY=40 B_CAM=30
else
  B_SETUP=45 B_TRAIN_EAGER=90 B_TRAIN=190 B_INFER=135 B_ANOMALY=50 B_CAM=25
fi

note() { echo "$*" | tee -a "$SUMMARY"; }

# run NAME LOG LATER_BUDGET CMD...: CMD under timeout (time left - LATER_BUDGET), output to LOG
run() {
  local name=$1 log=$2 later=$3
  shift 3
  local left=$((TOTAL - (SECONDS - START) - later))
  if [ "$left" -lt 5 ]; then
    note "$name: SKIPPED (no time left: ${left}s)"
    return 0
  fi
  local t0=$SECONDS
  echo "### $name (timeout ${left}s): $*" | tee -a "$log"
  timeout -k 10 "$left" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  local what=ok
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && what="TIMED OUT"
  [ "$rc" != 0 ] && [ "$what" = ok ] && what="FAILED"
  note "$name: $what (rc $rc, $((SECONDS - t0)) s of ${left} s)"
}

# -- 0. setup --------------------------------------------------------------------------------
setup() {
  echo "# $(date -u +%FT%TZ) dry=${DRY:-0} device=$DEVICE python=$PY out=$OUT"
  local site=${GPU_SESSION_SITE:-/tmp/site}
  local wheels=()
  for d in shared/wheels .whl; do
    [ -d "$d" ] && for w in "$d"/*.whl; do [ -e "$w" ] && wheels+=("$w"); done
  done
  # module name -> wheel name prefix
  local missing=()
  for pair in geomloss:geomloss opensimplex:opensimplex open_clip:open_clip_torch \
              ftfy:ftfy wcwidth:wcwidth pytorch_grad_cam:grad_cam ttach:ttach; do
    local mod=${pair%%:*} whl=${pair##*:}
    if [ -n "$DRY" ] || ! "$PY" -c "import $mod" >/dev/null 2>&1; then
      for w in "${wheels[@]}"; do
        case "$(basename "$w")" in "$whl"-*) missing+=("$w") ;; esac
      done
      [ -n "$DRY" ] || echo "missing module $mod"
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ -n "$DRY" ] && site=$(mktemp -d /tmp/gpu-session-site-XXXXXX)  # dry: install, don't use
    echo "installing into $site: ${missing[*]}"
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$site" "${missing[@]}" || echo "WARNING: carried wheels did not install"
    if [ -z "$DRY" ]; then
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
      ls "$site" && rm -rf "$site"
    fi
  fi
  if [ -z "$DRY" ]; then
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
      || echo "WARNING: pip install -e . failed"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  fi
  "$PY" - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available",
      torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available()
      else "")
for m in ("torchvision", "transformers", "timm", "triton", "numpy", "scipy", "cv2", "geomloss",
          "opensimplex", "open_clip", "pytorch_grad_cam", "bench"):
    try:
        mod = importlib.import_module(m)
        print(f"{m:18} {getattr(mod, '__version__', '')} {getattr(mod, '__file__', '')}")
    except Exception as exc:
        print(f"{m:18} MISSING ({type(exc).__name__}: {exc})")
EOF
  nproc
}
T0=$SECONDS
setup 2>&1 | tee "$OUT/setup.log"
# the PYTHONPATH export above ran in a pipeline's subshell: set it again here
if [ -z "$DRY" ] && grep -q "^installing into" "$OUT/setup.log"; then
  export PYTHONPATH="${GPU_SESSION_SITE:-/tmp/site}${PYTHONPATH:+:$PYTHONPATH}"
fi
note "setup: done ($((SECONDS - T0)) s; budget $B_SETUP s; PYTHONPATH=${PYTHONPATH:-})"

# -- 1-2. the AFLoc training step ------------------------------------------------------------
if [ -n "$DRY" ]; then
  TRAIN=(benchmarks/train_step.py --preset tiny --device cpu --iters 1 --batch-size 4
         --heatmap-batch 4)
  COMPILE=(--no-compile)  # compiling on the CPU takes minutes: the dry run checks the plumbing
else
  TRAIN=(benchmarks/train_step.py --preset paper --device cuda)
  COMPILE=()
fi
IMPLS=$("$PY" "${TRAIN[0]}" --help 2>/dev/null | tr -d '\n' \
        | sed -n 's/.*--local-impl {\([^}]*\)}.*/\1/p' | tr ',' ' ')
IMPL_ARGS=("")
[ -n "$IMPLS" ] && IMPL_ARGS=($IMPLS)
N=${#IMPL_ARGS[@]}
# train_steps LOG BUDGET LATER LABEL ARGS...: one run per implementation, BUDGET shared out
train_steps() {
  local log=$1 budget=$2 later=$3 label=$4
  shift 4
  local i=0 impl extra
  for impl in "${IMPL_ARGS[@]}"; do
    i=$((i + 1))
    extra=()
    [ -n "$impl" ] && extra=(--local-impl "$impl")
    run "train_step $label${impl:+ --local-impl $impl}" "$log" \
      $((later + (N - i) * budget / N)) "$PY" "${TRAIN[@]}" "${extra[@]}" "$@"
  done
}
train_steps "$OUT/train_step_eager.log" "$B_TRAIN_EAGER" \
  $((B_TRAIN + B_INFER + B_ANOMALY + B_CAM)) "--no-compile" --no-compile
train_steps "$OUT/train_step.log" "$B_TRAIN" $((B_INFER + B_ANOMALY + B_CAM)) \
  "(eager + compiled)" "${COMPILE[@]}"

# -- 3. inference of every method ------------------------------------------------------------
if [ -n "$DRY" ]; then
  INFER=(--preset tiny --device cpu --batch 2 --n 2 --size 64 --repeats 1 --threads 1)
else
  INFER=(--preset paper --device cuda --batch 64,256)
fi
run "inference_speed" "$OUT/inference.log" $((B_ANOMALY + B_CAM)) \
  "$PY" benchmarks/inference_speed.py --methods all "${INFER[@]}" --json "$OUT/inference.json"
rm -f "$OUT"/*.tmp  # a JSON rewrite cut by the timeout (at most 8 files come back)

# -- 4. RD++ and ReContrast training and inference -------------------------------------------
if [ -n "$DRY" ]; then
  ANOM=(--network tiny --device cpu --batch 2 --steps 1 --threads 1)
else
  ANOM=(--network paper --device cuda --batch 16 --steps 20 --threads 8)
fi
run "anomaly_speed" "$OUT/anomaly.log" "$B_CAM" "$PY" benchmarks/anomaly_speed.py "${ANOM[@]}"

# -- 5. CAM classes over CheXlocalize's classifier -------------------------------------------
if [ -n "$DRY" ]; then
  CAM=(--arch densenet-tiny --size 64 --images 2 --batch-size 4 --repeats 1 --device cpu
       --threads 1)
else
  CAM=(--arch densenet121 --size 320 --images 32 --batch-size 64 --repeats 2 --device cuda
       --threads 8)
fi
run "cam_speed" "$OUT/cam.log" 0 "$PY" benchmarks/cam_speed.py "${CAM[@]}"

note "total: $((SECONDS - START)) s of $TOTAL s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
