#!/bin/bash
# Builds .gpu/ (git-ignored) in the repository root: what a GPU host without Node and without a
# network needs to run bench/gpu/run.sh there, with dist/ beside it. About 45 MB:
#   node.xz       this machine's node binary, xz-compressed (about 24 MB)
#   nm.tar.xz     node_modules without development packages, other platforms' binaries and source maps (about 21 MB)
#   debs/*.deb    the Vulkan and EGL loaders (Debian amd64), unpacked there only when libvulkan is missing
#   run.sh        a copy of bench/gpu/run.sh
# Needs the optional packages webgpu and @tensorflow/tfjs-backend-webgpu installed (npm ci does).
# Then carry .gpu and dist to the GPU host and run `bash .gpu/run.sh` in the repository root there.
set -euo pipefail
cd "$(dirname "$0")/../.."
for pkg in webgpu @tensorflow/tfjs-backend-webgpu; do
  [ -d "node_modules/$pkg" ] || { echo "make-bundle: node_modules/$pkg is missing (npm ci installs the optional dependencies)" >&2; exit 1; }
done
npm run build
rm -rf .gpu && mkdir -p .gpu/debs

xz -T2 -6 -c "$(command -v node)" > .gpu/node.xz

# node_modules is a symlink in some checkouts: -h archives what it points to.
tar -chf - \
  --exclude='node_modules/typescript' --exclude='node_modules/@typescript' --exclude='node_modules/@types' \
  --exclude='node_modules/@biomejs' --exclude='node_modules/kubernetes-models' --exclude='node_modules/@kubernetes-models' \
  --exclude='*.map' \
  --exclude='node_modules/tokenizers/tokenizers.[!l]*' --exclude='node_modules/tokenizers/tokenizers.linux-a*' \
  --exclude='node_modules/tokenizers/tokenizers.linux-x64-musl.node' \
  --exclude='node_modules/webgpu/dist/[!l]*' --exclude='node_modules/webgpu/dist/linux-arm64' \
  --exclude='node_modules/@tensorflow/tfjs-node-gpu' \
  node_modules | xz -T2 -6 > .gpu/nm.tar.xz

# The loaders, for amd64 whatever this machine is, with a private apt state (nothing installed here).
state=$(mktemp -d)
mkdir -p "$state/partial"
o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$state"
# shellcheck disable=SC2086
apt-get $o update >/dev/null
# shellcheck disable=SC2086
(cd .gpu/debs && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
rm -rf "$state"

cp bench/gpu/run.sh .gpu/run.sh
du -sh .gpu dist
