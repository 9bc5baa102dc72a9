#!/usr/bin/env bash
# The CUDA path in one go, for the first GPU at hand (issue 18): float16 sequential against
# batched decoding on the bundled model and a 10-minute file, our engine beside both, its
# first cue, and the GPU memory at its peak. Needs only the repository; installs what it lacks.
#
#     bash bench/gpu.sh [MINUTES]        (default 10; about 5 minutes on one modern GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"

command -v nvidia-smi >/dev/null || { echo "gpu.sh: no NVIDIA GPU here (nvidia-smi is missing)"; exit 2; }
missing=()
for tool in ffmpeg espeak-ng; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
pip=(python3 -m pip install -q --disable-pip-version-check)
"${pip[@]}" -e .
# CTranslate2's CUDA build loads cuBLAS and cuDNN 9 at run time; the wheels carry them.
"${pip[@]}" nvidia-cublas-cu12 'nvidia-cudnn-cu12==9.*'
libs="$(python3 -c 'import os, nvidia.cublas.lib as b, nvidia.cudnn.lib as d; print(os.path.dirname(b.__file__) + ":" + os.path.dirname(d.__file__))')"
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"
export HF_HUB_OFFLINE=1

peak_file="$(mktemp)"
echo 0 >"$peak_file"
( while sleep 0.2; do
    used="$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)"
    [ "$used" -gt "$(cat "$peak_file")" ] && echo "$used" >"$peak_file"
  done ) &
sampler=$!
trap 'kill $sampler 2>/dev/null; rm -f "$peak_file"' EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 bench/asr_overhead.py --minutes "$minutes" --runs 1
echo "peak GPU memory in use: $(cat "$peak_file") MiB"
