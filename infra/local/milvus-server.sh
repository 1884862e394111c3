#!/usr/bin/env bash
# A local Milvus server for trials: Milvus Lite's gRPC server mode on 127.0.0.1.
#   eval "$(infra/local/milvus-server.sh start)"   # prints: export PAGEMILL_MILVUS_URI=http://127.0.0.1:PORT
#   pagemill ingest examples/pdfs --out demo-out --milvus "$PAGEMILL_MILVUS_URI"
#   infra/local/milvus-server.sh stop
set -euo pipefail
. "$(dirname "$0")/_common.sh"
case "${1:-}" in
  start)
    port="${PORT:-$(free_port)}"
    bin="$(dirname "$(command -v "$PY")")/milvus-lite"
    [ -x "$bin" ] || bin=milvus-lite
    nohup "$bin" server --data-dir "$STATE_DIR/milvus-data" --host 127.0.0.1 --port "$port" \
      > "$STATE_DIR/milvus.log" 2>&1 &
    echo $! > "$STATE_DIR/milvus.pid"; echo "$port" > "$STATE_DIR/milvus.port"
    wait_port "$port" "$(cat "$STATE_DIR/milvus.pid")"
    echo "export PAGEMILL_MILVUS_URI=http://127.0.0.1:$port"
    ;;
  env)
    echo "export PAGEMILL_MILVUS_URI=http://127.0.0.1:$(cat "$STATE_DIR/milvus.port")" ;;
  stop)
    stop_pid milvus ;;
  *)
    echo "usage: $0 start|env|stop" >&2; exit 2 ;;
esac
