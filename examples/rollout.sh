#!/usr/bin/env bash
# Upload a folder to a node, name it, and print where it is served.
#   examples/rollout.sh [FOLDER] [NAME] [NODE_URL]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
folder=${1:-$here/sample-spa}
name=${2:-sample-app}
node=${3:-${EDGEFILES_NODE:-http://127.0.0.1:4454}}
edgefiles=${EDGEFILES_BIN:-$here/../.venv/bin/edgefiles}

cid=$("$edgefiles" add --node "$node" --name "$name" "$folder")
port=${node##*:}
echo "uploaded $folder as $cid"
echo "open http://$name.actyx.localhost:$port/"
