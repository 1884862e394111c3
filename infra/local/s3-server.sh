#!/usr/bin/env bash
# A local S3-compatible server for trials: moto's server mode on 127.0.0.1.
#   eval "$(infra/local/s3-server.sh start)"   # prints the AWS_* exports to use
#   aws --endpoint-url "$AWS_ENDPOINT_URL" s3 mb s3://archive   (or boto3)
#   pagemill ingest s3://archive/pdfs/ --out s3://archive/index/ --milvus demo.db
#   infra/local/s3-server.sh stop
# It needs moto's server, which pagemill's own install does not bring: pip install 'pagemill[local]'.
# moto accepts any credentials; the exports below are its documented placeholder values.
set -euo pipefail
. "$(dirname "$0")/_common.sh"
print_env() {
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$1"
  echo "export AWS_DEFAULT_REGION=\${AWS_DEFAULT_REGION:-us-east-1}"
  echo "export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-testing}"
  echo "export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-testing}"
}
case "${1:-}" in
  start)
    port="${PORT:-$(free_port)}"
    bin="$(dirname "$(command -v "$PY")")/moto_server"
    [ -x "$bin" ] || bin=moto_server
    command -v "$bin" > /dev/null || {
      echo "moto_server is not installed: pip install 'pagemill[local]' (moto's S3 server) and try again" >&2; exit 2; }
    nohup "$bin" -H 127.0.0.1 -p "$port" > "$STATE_DIR/s3.log" 2>&1 &
    echo $! > "$STATE_DIR/s3.pid"; echo "$port" > "$STATE_DIR/s3.port"
    wait_port "$port" "$(cat "$STATE_DIR/s3.pid")"
    print_env "$port"
    ;;
  env)
    print_env "$(cat "$STATE_DIR/s3.port")" ;;
  stop)
    stop_pid s3 ;;
  *)
    echo "usage: $0 start|env|stop" >&2; exit 2 ;;
esac
