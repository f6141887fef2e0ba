#!/bin/bash
# The GPU run, on a host without Node and without a network: unpack what bench/gpu/make-bundle.sh
# put in .gpu/, find the WebGPU adapter (Dawn over Vulkan), then
#   1. parity: a small model, the same rows on wasm and on webgpu (greedy B=1, 8; sampling B=8):
#      every variant's tokens_sha1 must match
#   2. the GPT-2-small shape through bench/gpu/compiler.ts on webgpu: B=1, 8, 32 greedy, B=32 sampling
#   3. the KV cache write: slot shader against the `where` copy (bench/gpu/kv-write.ts)
#   4. `batchgen generate` through the CLI on webgpu, 8 prompts (one B=8 variant)
# Run in the repository root with .gpu/ and dist/ present: `bash .gpu/run.sh` (or bench/gpu/run.sh).
# Writes to $OUT (default /tmp/batchgen-gpu-out): log.txt, parity-wasm.json, parity-webgpu.json,
# gpt2-small.json, kv-write.json, cli.jsonl, smi.csv. Every step has its own timeout; about 8 minutes
# at worst. SMOKE=1: a dry run on a CPU with a software Vulkan driver (lavapipe), small shapes only.
set -u
cd "$(dirname "$0")/.."
[ -d .gpu ] || cd ..
G=$PWD/.gpu
W=${BATCHGEN_GPU_WORK:-/tmp/batchgen-gpu}
OUT=${OUT:-/tmp/batchgen-gpu-out}
mkdir -p "$W" "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
T0=$(date +%s)
el() { echo "[+$(( $(date +%s) - T0 ))s] $*"; }

el "unpack"
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  for f in "$G"/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if ! command -v node >/dev/null 2>&1 || [ "${SMOKE:-0}" = 1 ]; then
  if [ ! -x "$W/node" ]; then
    xz -dc "$G/node.xz" > "$W/node" 2>/dev/null && chmod +x "$W/node" ||
      python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" "$G/node.xz" "$W/node"
    chmod +x "$W/node"
  fi
  export PATH=$W:$PATH
fi
if [ ! -e node_modules ]; then
  if [ ! -d "$W/node_modules" ]; then
    tar -xJf "$G/nm.tar.xz" -C "$W" 2>/dev/null ||
      python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$G/nm.tar.xz" "$W"
  fi
  # Node resolves a package's own imports from its real path: the folder must be named node_modules.
  ln -s "$W/node_modules" node_modules
fi
node --version || { el "no node: stop"; exit 1; }

el "environment"
uname -r; grep -m1 PRETTY /etc/os-release
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
ldconfig -p | grep -E 'libvulkan|libGLX_nvidia|libEGL_nvidia' | head

probe() {
  timeout 30 node --input-type=module -e "
    import { loadWebgpu } from './dist/src/compiler/webgpu.js';
    try { console.log('ADAPTER', JSON.stringify(await loadWebgpu())); process.exit(0); }
    catch (e) { console.log('NO ADAPTER:', e.message); process.exit(3); }"
}
el "adapter probe"
if ! probe; then
  el "again with the NVIDIA Vulkan driver named"
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}
  probe || { el "no WebGPU adapter: stop"; exit 2; }
fi
( nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm --format=csv -l 1 > "$OUT/smi.csv" 2>/dev/null & )

if [ "${SMOKE:-0}" = 1 ]; then
  BIG="GPU_LAYERS=2 GPU_EMBD=128 GPU_HEADS=4 GPU_BATCHES=1,4 GPU_SAMPLE_BATCHES= GPU_RUNS=1" # the CLI step needs the full vocabulary
  KV="KV_LAYERS=2 KV_ROWS=1,8 KV_STEPS=5"
  SMALL_VOCAB=2048 # a software adapter's full sorts of 50257 scores take minutes
else
  SMALL_VOCAB=50257
  BIG="GPU_BATCHES=1,8,32 GPU_SAMPLE_BATCHES=32 GPU_RUNS=3"
  KV="KV_ROWS=1,8,32"
fi

el "1. parity: a small model, the same rows on wasm and webgpu"
mkdir -p "$W/m-small"
for b in wasm webgpu; do
  env BATCHGEN_BACKEND=$b GPU_MODEL_DIR="$W/m-small" GPU_LAYERS=2 GPU_EMBD=128 GPU_HEADS=4 GPU_VOCAB=$SMALL_VOCAB GPU_BATCHES=1,8 \
    GPU_SAMPLE_BATCHES=8 GPU_RUNS=1 GPU_OUT="$OUT/parity-$b.json" timeout 75 node dist/bench/gpu/compiler.js |
    grep -E '"variant"|"summary"|Error'
done
el "parity: $(timeout 20 node --input-type=module -e "
  import { readFileSync } from 'node:fs';
  const [a, b] = ['wasm', 'webgpu'].map((x) => JSON.parse(readFileSync('$OUT/parity-' + x + '.json', 'utf8')).results.map((r) => r.tokens_sha1));
  console.log(JSON.stringify(a) === JSON.stringify(b) ? 'MATCH' : 'DIFFER', a.join(' '), '|', b.join(' '));" 2>&1 | tail -1)"

el "2. GPT-2-small shape on webgpu"
mkdir -p "$W/m-gpt2"
env $BIG BATCHGEN_BACKEND=webgpu GPU_MODEL_DIR="$W/m-gpt2" GPU_OUT="$OUT/gpt2-small.json" timeout 180 node dist/bench/gpu/compiler.js
el "bench exit $?"

el "3. KV cache write: slot shader against the where copy"
env $KV BATCHGEN_BACKEND=webgpu KV_OUT="$OUT/kv-write.json" timeout 40 node dist/bench/gpu/kv-write.js
el "kv-write exit $?"

el "4. batchgen generate on webgpu, 8 prompts"
P=(); for i in 1 2 3 4 5 6 7 8; do P+=(--prompt "TensorFlow is number $i of"); done
BATCHGEN_BACKEND=webgpu timeout 45 node bin/batchgen.js generate --model "$W/m-gpt2" "${P[@]}" --max-new-tokens 16 --json > "$OUT/cli.jsonl"
el "cli exit $?, $(wc -l < "$OUT/cli.jsonl") lines"
head -2 "$OUT/cli.jsonl"
el "done"
