#!/usr/bin/env bash
# The image's entry point: MODE=pod (default) serves the HTTP API, MODE=serverless runs the
# RunPod queue worker.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

case "${MODE:-pod}" in
  pod) exec subtide serve ;;
  serverless) exec python -u "$here/handler.py" ;;
  *)
    echo "start.sh: unknown MODE '${MODE}' (expected 'pod' or 'serverless')" >&2
    exit 2
    ;;
esac
