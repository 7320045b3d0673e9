#!/usr/bin/env bash
# Upload a folder to a node, name it, and print where the node serves it.
#   examples/rollout.sh [FOLDER] [NAME] [NODE_URL]
# FOLDER defaults to the sample SPA beside this script, NAME to sample-app, NODE_URL to
# $EDGEFILES_NODE or http://127.0.0.1:4454. The command line used: $EDGEFILES_BIN, else the
# project's .venv/bin/edgefiles (`make setup` makes it), else edgefiles on the PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
folder=${1:-$here/sample-spa}
name=${2:-sample-app}
node=${3:-${EDGEFILES_NODE:-http://127.0.0.1:4454}}
edgefiles=${EDGEFILES_BIN:-}
if [ -z "$edgefiles" ]; then
  if [ -x "$here/../.venv/bin/edgefiles" ]; then
    edgefiles=$here/../.venv/bin/edgefiles
  elif command -v edgefiles >/dev/null; then
    edgefiles=edgefiles
  else
    echo "rollout.sh: no edgefiles command: run 'make setup' in the project, or set EDGEFILES_BIN" >&2
    exit 127
  fi
fi

said=$(mktemp)
trap 'rm -f "$said"' EXIT
if ! cid=$("$edgefiles" add --node "$node" --name "$name" "$folder" 2>"$said"); then
  cat "$said" >&2
  exit 1
fi
cat "$said" >&2  # its notes too (hidden files left out, ...)
# the node says where it serves the name (its host suffix and port): `NAME -> CID, served at URL`
url=$(sed -n 's/.*, served at \(.*\)$/\1/p' "$said")
echo "uploaded $folder as $cid"
echo "open $url"
