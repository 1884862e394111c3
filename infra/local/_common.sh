# Shared by the local launchers: state folder, free port, waiting for a port.
STATE_DIR="${PAGEMILL_LOCAL_DIR:-$PWD/.pagemill-local}"
PY="${PYTHON:-python3}"
mkdir -p "$STATE_DIR"

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {  # wait_port PORT PID
  for _ in $(seq 1 150); do
    if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.5)" 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "server exited before listening (see $STATE_DIR/*.log)" >&2; return 1; }
    sleep 0.2
  done
  echo "nothing listens on 127.0.0.1:$1 after 30s" >&2; return 1
}

stop_pid() {  # stop_pid NAME
  local f="$STATE_DIR/$1.pid"
  [ -f "$f" ] || { echo "$1: not running"; return 0; }
  local pid; pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f" "$STATE_DIR/$1.port"
  echo "$1: stopped"
}
