#!/usr/bin/env bash
# The project's first GPU check: one command, about 8 minutes on one H200/H100, results in one markdown file.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine: writes benchmarks/results/gpu_check.md
#   bash benchmarks/gpu_check.sh --tiny          # the same steps at tiny sizes on the CPU (what the tests run)
#
# What it measures, with the real code (random weights at the paper's sizes; nothing is downloaded):
#   1. USiT-2B training throughput (img/s, bf16 autocast): f64c128 8x8x128 vs f32c32 16x16x32 latents
#      (paper Table 4, H100: 450 vs 112 img/s), then the same with every block compiled (--compile);
#   2. the f64c128 autoencoder's decode at 512 / 1024 px and tiled 2048 px vs diffusers' AutoencoderDC;
#   3. 50-step sampling of 512 px latents (USiT-2B, guidance 1.5, euler);
#   4. one FSDP2 training step (train_usit.py --fsdp's sharding, sharded AdamW and EMA) on one GPU vs the plain model.
# Each step's output goes into the results file as it comes; a failing step is recorded and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${GPU_CHECK_OUT:-benchmarks/results/gpu_check.md}"
TINY=0
[[ "${1:-}" == "--tiny" ]] && TINY=1
mkdir -p "$(dirname "$OUT")"

if [[ $TINY == 1 ]]; then  # every step once, at sizes a 2-core CPU runs in seconds
  DEVICE=cpu
  USIT="--hidden 64 --num_layers 2 --heads 2 --batch_size 4 --steps 1 --warmup 1 --resolution 64 --ae_width_divisor 16"
  AE="--resolutions 64 --tiled_resolution 128 --width_divisor 16 --rounds 1 --dtypes fp32"
  SAMPLE="--hidden 64 --num_layers 2 --heads 2 --batch_size 1 --steps 2 --rounds 1"
  COMPILE_BACKEND=eager
else
  DEVICE=cuda
  USIT="--hidden 2048 --num_layers 28 --heads 32 --batch_size 64 --steps 10 --warmup 3 --resolution 256 --ae_width_divisor 1 --bf16"
  AE="--resolutions 512 1024 --tiled_resolution 2048 --rounds 5 --dtypes bf16 fp32"
  SAMPLE="--hidden 2048 --num_layers 28 --heads 32 --batch_size 1 --steps 50 --rounds 3"
  COMPILE_BACKEND=inductor
fi

step() {  # step TITLE COMMAND...: run it, append its output (or its failure) to the results file
  local title="$1"; shift
  echo "## $title" >> "$OUT"
  echo '```' >> "$OUT"
  local start=$SECONDS
  if (cd benchmarks && "$@") >> "$OUT" 2>&1; then status=ok; else status="FAILED (exit $?)"; fi
  echo '```' >> "$OUT"
  echo "$title: $status in $((SECONDS - start)) s" | tee -a "$OUT"
  echo >> "$OUT"
}

{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ), git $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo '```'
  if [[ $TINY == 1 ]]; then echo "tiny mode on the CPU: the steps run, the numbers mean nothing"; fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
  echo '```'
  echo
} > "$OUT"

PY="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
step "USiT-2B training, f64c128 vs f32c32" "$PY" bench_train_usit.py $USIT --device $DEVICE
step "USiT-2B training, blocks compiled" "$PY" bench_train_usit.py $USIT --device $DEVICE --compile --compile_backend $COMPILE_BACKEND
step "f64c128 autoencoder vs diffusers AutoencoderDC" "$PY" bench_autoencoder.py --preset dc-ae-1.5-f64c128 $AE --device $DEVICE
step "50-step sampling, 512 px latents" "$PY" bench_guidance_interval.py $SAMPLE --device $DEVICE
step "USiT-2B training, FSDP2 on one GPU vs plain" "$PY" bench_train_usit.py $USIT --device $DEVICE --fsdp
echo "wrote $OUT"
