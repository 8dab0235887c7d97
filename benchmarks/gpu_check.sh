#!/usr/bin/env bash
# The prepared GPU check (docs/deployment.md), for a host with an NVIDIA GPU and driver:
#   bash benchmarks/gpu_check.sh              fresh venv with `pip install -e '.[gpu,image]'`,
#                                             export the two demo bundles, CUDA-vs-CPU parity and
#                                             throughput at batch 1, 8, 32 (aim: under 8 minutes)
#   bash benchmarks/gpu_check.sh --cpu-only   no GPU: the same steps, CPU parts only (CI-less check
#                                             that the script itself works)
# Environment: USFAD_GPU_CHECK_DIR (work folder, default /tmp/usfad-gpu-check), USFAD_PYTHON (use
# this interpreter instead of making a venv: skips the install), USFAD_GPU_CHECK_SECONDS (time per
# throughput setting, default 2). Results: $USFAD_GPU_CHECK_DIR/results.json and the printed table.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
work=${USFAD_GPU_CHECK_DIR:-/tmp/usfad-gpu-check}
mkdir -p "$work"
started=$SECONDS
phase() { echo "[gpu_check $((SECONDS - started)) s] $*"; }

if [[ "$mode" != "--cpu-only" ]]; then
  command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: not an NVIDIA host (try --cpu-only)" >&2; exit 1; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi

if [[ -n "${USFAD_PYTHON:-}" ]]; then
  python=$USFAD_PYTHON
  phase "using $python (no install)"
else
  extra=gpu
  [[ "$mode" == "--cpu-only" ]] && extra=cpu
  phase "fresh venv in $work/venv: pip install -e '.[$extra,image]'"
  rm -rf "$work/venv"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q --upgrade pip
  "$work/venv/bin/pip" install -q -e ".[$extra,image]"
  python=$work/venv/bin/python
  # Exactly one ONNX Runtime: onnxruntime and onnxruntime-gpu share the `onnxruntime` module.
  runtimes=$("$python" -m pip list --format=freeze | grep -i -c -E '^onnxruntime(-gpu)?==' || true)
  "$python" -m pip list --format=freeze | grep -i -E '^onnxruntime'
  [[ "$runtimes" == 1 ]] || { echo "expected exactly one ONNX Runtime, found $runtimes" >&2; exit 1; }
fi

export PYTHONPATH=$PWD
phase "exporting the demo bundles (demo-tabular, demo-image) to $work/demo"
"$python" -m training.demo --out "$work/demo"

phase "parity and throughput"
args=(--demo "$work/demo" --seconds "${USFAD_GPU_CHECK_SECONDS:-2}" --out "$work/results.json")
[[ "$mode" == "--cpu-only" ]] && args+=(--cpu-only)
status=0
"$python" benchmarks/gpu_check.py "${args[@]}" || status=$?
phase "done (exit $status)"
exit $status
