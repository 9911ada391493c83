#!/usr/bin/env bash
# The paper scale of `bench reproduce` on the synthetic world, as much of it as one GPU lease
# holds (issue 24's "when a GPU is available"):
#
#   bash benchmarks/gpu_reproduce.sh                   # from the repository root, on the GPU box
#   GPU_REPRO_DRY=1 bash benchmarks/gpu_reproduce.sh   # the same steps at --scale micro, on CPU
#
# Steps:
#   0. setup: the carried wheels (shared/wheels or .whl) of the modules the image lacks, into
#      /tmp/site; `pip install --no-deps --no-build-isolation -e .`; versions and nvidia-smi.
#      torchxrayvision matters: without it the synthetic world is the procedural fallback, not
#      the anchored world every synthetic figure of the README was measured on.
#   1. bench reproduce --scale paper --data synthetic --seeds 1 --only $GPU_REPRO_ONLY
#      (default table-1) under `timeout -s INT`: the runner writes OUT/reproduce.json (every job's
#      status and seconds) when it is interrupted too. The first job also builds the full
#      synthetic world's units it reads, inside its own wall time.
#   2. epochs.tsv: every training folder's epochs (seconds, steps, pairs/s, losses) from its
#      history.json, so a job cut off by the budget still gives its rate per epoch.
# Make the wheels first, where the registry is reachable:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_34_x86_64 -d shared/wheels torchxrayvision==1.5.7 pydicom \
#     pycocotools pylibjpeg pylibjpeg-libjpeg geomloss opensimplex open_clip_torch ftfy wcwidth \
#     grad-cam ttach
# Files back under $OUT (at most 8): summary.txt, setup.log, reproduce.log, reproduce.json,
# epochs.tsv, tables.md.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=${GPU_REPRO_DRY:-0}
[ "$DRY" = 0 ] && DRY=
PY=${PYTHON:-python3}
if [ -n "$DRY" ]; then
  OUT=${OUT:-$(mktemp -d /tmp/gpu-repro-dry-XXXXXX)}
  [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
  SCALE=micro
  TOTAL=${GPU_REPRO_BUDGET:-300}
else
  OUT=${OUT:-results/gpu-reproduce}
  SCALE=paper
  TOTAL=${GPU_REPRO_BUDGET:-540}
fi
ONLY=${GPU_REPRO_ONLY:-table-1}
RUN_DIR=${GPU_REPRO_RUN_DIR:-/tmp/reproduce-$SCALE-synthetic}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
export TOKENIZERS_PARALLELISM=false
START=$SECONDS
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# -- 0. setup --------------------------------------------------------------------------------
SITE=${GPU_REPRO_SITE:-/tmp/site}
setup() {
  echo "# $(date -u +%FT%TZ) dry=${DRY:-0} scale=$SCALE only=$ONLY python=$PY out=$OUT"
  local wheels=() missing=()
  for d in shared/wheels .whl; do
    [ -d "$d" ] && for w in "$d"/*.whl; do [ -e "$w" ] && wheels+=("$w"); done
  done
  # module:wheel-name prefix, for what the project imports and the GPU image lacks; found
  # without importing (find_spec), one interpreter start
  local absent
  absent=$("$PY" - <<'EOF2'
import importlib.util
pairs = ("geomloss:geomloss opensimplex:opensimplex open_clip:open_clip_torch ftfy:ftfy "
         "wcwidth:wcwidth pytorch_grad_cam:grad_cam ttach:ttach pydicom:pydicom "
         "pycocotools:pycocotools pylibjpeg:pylibjpeg libjpeg:pylibjpeg_libjpeg "
         "torchxrayvision:torchxrayvision")
for pair in pairs.split():
    mod, whl = pair.split(":")
    if importlib.util.find_spec(mod) is None:
        print(whl)
EOF2
)
  local whl
  for whl in $absent; do
    echo "missing: $whl"
    for w in "${wheels[@]}"; do
      case "$(basename "$w")" in "$whl"-*) missing+=("$w") ;; esac
    done
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing into $SITE: ${missing[*]}"
    timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" "${missing[@]}" || echo "WARNING: carried wheels did not install"
  fi
  if [ -z "$DRY" ]; then
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
      || echo "WARNING: pip install -e . failed"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  fi
  PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for m in ("bench", "torchxrayvision", "pydicom", "geomloss", "open_clip"):
    try:
        print(f"{m:16} {getattr(importlib.import_module(m), '__version__', '')}")
    except Exception as exc:
        print(f"{m:16} MISSING ({type(exc).__name__}: {exc})")
from bench.synth.anchors import load_anchors
print("synthetic world anchors:", load_anchors().source)
EOF
  nproc
}
T0=$SECONDS
setup 2>&1 | tee "$OUT/setup.log"
[ -d "$SITE" ] && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
note "setup: $((SECONDS - T0)) s"

# -- 1. the plan, as far as the budget goes --------------------------------------------------
LEFT=$((TOTAL - (SECONDS - START) - 75))  # the stop (up to 60 s) and step 2
if [ "$LEFT" -lt 30 ]; then
  note "reproduce: SKIPPED (${LEFT} s left of the budget)"
else
  note "reproduce: --scale $SCALE --data synthetic --seeds 1 --only $ONLY, at most $LEFT s"
  T0=$SECONDS
  # SIGINT: the runner stops its jobs and still writes reproduce.json (and, when every job
  # finished, the tables)
  timeout -s INT -k 60 "$LEFT" "$PY" -m bench.cli.main reproduce --scale "$SCALE" \
    --data synthetic --seeds 1 --only "$ONLY" --out "$RUN_DIR" 2>&1 | tee "$OUT/reproduce.log"
  note "reproduce: rc ${PIPESTATUS[0]} after $((SECONDS - T0)) s"
fi
for f in reproduce.json tables.md; do
  [ -f "$RUN_DIR/$f" ] && cp "$RUN_DIR/$f" "$OUT/"
done

# -- 2. every training's epochs --------------------------------------------------------------
"$PY" - "$RUN_DIR" "$OUT/epochs.tsv" <<'EOF' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path

run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
keys = ("epoch", "seconds", "steps", "pairs", "pairs_per_s", "train_loss", "val_loss")
rows = ["job\tdevice\t" + "\t".join(keys)]
for hist in sorted(run_dir.glob("train/*/history.json")):
    data = json.loads(hist.read_text())
    device = data.get("config", {}).get("device", "")
    for ep in data.get("epochs", []):
        rows.append(f"{hist.parent.name}\t{device}\t"
                    + "\t".join(str(ep.get(k, "")) for k in keys))
out.write_text("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
note "total: $((SECONDS - START)) s of $TOTAL s; files: $(ls "$OUT" | tr '\n' ' ')"
