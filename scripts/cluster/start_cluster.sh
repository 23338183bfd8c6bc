#!/usr/bin/env bash
# Start a Ray cluster node for rtune on this machine.
#
#   scripts/cluster/start_cluster.sh                      head node: GCS on port 6379, dashboard + Jobs API on
#                                                 http://127.0.0.1:8265 (loopback only; reach it with ssh -L)
#                                                 (Ray's own processes listen on the machine's address so that
#                                                 other nodes can join; `python -m rtune up` is loopback-only)
#   scripts/cluster/start_cluster.sh --join HEAD:PORT     worker node: join the head at HEAD:PORT (run on each extra machine)
#
# Options (or the environment variables in brackets):
#   --port N            GCS port of the head [RTUNE_RAY_PORT, 6379]
#   --dashboard-port N  dashboard / Jobs API port [RTUNE_DASHBOARD_PORT, 8265]
#   --host IP           address the head's GCS listens on [RTUNE_HEAD_HOST, 127.0.0.1]; use the machine's
#                       cluster-network address when worker nodes on other machines will join
#   --num-cpus N        CPUs this node offers to Ray [RTUNE_NUM_CPUS, all]
#   --num-gpus N        GPUs this node offers to Ray [RTUNE_NUM_GPUS, all detected]
#
# The node runs under `ray start --block` in its own session; its pid and temp dir are recorded in
# $RTUNE_CLUSTER_DIR (default ~/.cache/rtune/cluster-<port>), so scripts/cluster/stop_cluster.sh stops exactly
# this node and nothing else Ray runs on the machine. Token authentication is on (Ray's default):
# clients read ~/.ray/auth_token; worker nodes on other machines need the same file (or RAY_AUTH_TOKEN).
set -euo pipefail

port=${RTUNE_RAY_PORT:-6379}
dashboard_port=${RTUNE_DASHBOARD_PORT:-8265}
host=${RTUNE_HEAD_HOST:-127.0.0.1}
num_cpus=${RTUNE_NUM_CPUS:-}
num_gpus=${RTUNE_NUM_GPUS:-}
join=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --dashboard-port) dashboard_port=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --num-cpus) num_cpus=$2; shift 2 ;;
    --num-gpus) num_gpus=$2; shift 2 ;;
    --join) join=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "start_cluster.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v ray >/dev/null || { echo "start_cluster.sh: 'ray' not found: activate the environment scripts/setup.sh made" >&2; exit 2; }
name=$([ -n "$join" ] && echo "worker-${join//[:.]/-}" || echo "$port")
state_dir=${RTUNE_CLUSTER_DIR:-$HOME/.cache/rtune/cluster-$name}
mkdir -p "$state_dir"
if [ -f "$state_dir/pid" ] && kill -0 "$(cat "$state_dir/pid")" 2>/dev/null; then
  echo "start_cluster.sh: a node started by this script is already running (pid $(cat "$state_dir/pid")); stop it with scripts/cluster/stop_cluster.sh $([ -n "$join" ] && echo "--join $join" || echo "--port $port")" >&2
  exit 2
fi
# Unix socket paths live under the temp dir and must stay short (< 108 bytes).
temp_dir=${RTUNE_RAY_TEMP_DIR:-/tmp/rtune-ray-$name}
# The dashboard agent's HTTP port (the Jobs API runs jobs through it) defaults to 52365 on every node;
# a second node or cluster on the same machine could not bind it, and job submission would then fail.
agent_port=${RTUNE_AGENT_PORT:-$(python -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")}
resources=(--dashboard-agent-listen-port="$agent_port")
[ -n "$num_cpus" ] && resources+=(--num-cpus="$num_cpus")
[ -n "$num_gpus" ] && resources+=(--num-gpus="$num_gpus")

if [ -n "$join" ]; then
  # A temp dir of its own: a node sharing the head's (two nodes on one machine) unpacks each job's working_dir
  # into the same directory the head's job driver imports from, and the driver can meet files half-written.
  args=(--address="$join" --temp-dir="$temp_dir" "${resources[@]}")
else
  # Dashboard (and with it the Jobs API) on loopback only; the client server moves with the port so
  # two heads can share a machine.
  args=(--head --node-ip-address="$host" --port="$port" --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port"
        --ray-client-server-port=$((port + 1)) --temp-dir="$temp_dir" "${resources[@]}")
fi
# Stop fast: draining (for Serve replicas) is not needed by training jobs, whose checkpoints are on storage,
# and its RPC can hang for ~40 s. 0 turns it off.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}
# Token authentication: the head turns it on by itself; a joining node must be told, or it is refused.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
# Workers at normal priority: Ray starts them at nice 15, below its own helper processes.
export RAY_worker_niceness=${RAY_worker_niceness:-0}
# Every process of this node inherits this tag (Ray's workers take the raylet's environment): stop_cluster.sh
# finds by it the ones whose names no longer say which node they belong to (`ray::TrainController`).
export RTUNE_NODE_TAG="$state_dir"
setsid ray start --block --disable-usage-stats "${args[@]}" >"$state_dir/ray.log" 2>&1 < /dev/null &
echo $! > "$state_dir/pid"
# Every node runs under a temp dir of its own: stop_cluster.sh kills this node's stragglers by it.
echo "$temp_dir" > "$state_dir/temp_dir"

if [ -n "$join" ]; then
  for _ in $(seq 1 60); do
    grep -q "Ray runtime started" "$state_dir/ray.log" && break
    kill -0 "$(cat "$state_dir/pid")" 2>/dev/null || { cat "$state_dir/ray.log" >&2; exit 1; }
    sleep 1
  done
  echo "worker node joined $join (pid $(cat "$state_dir/pid"), log $state_dir/ray.log)"
  echo "stop it with: scripts/cluster/stop_cluster.sh --join $join"
  exit 0
fi

# Ready when the Jobs API answers (it needs the auth token, which `ray start` creates if missing).
url="http://127.0.0.1:$dashboard_port"
for _ in $(seq 1 90); do
  token_file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
  header=()
  [ -f "$token_file" ] && header=(-H "Authorization: Bearer $(cat "$token_file")")
  if curl -sf "${header[@]}" "$url/api/version" >/dev/null 2>&1; then
    echo "$url" > "$state_dir/dashboard_url"
    cat <<MSG
Ray head started (pid $(cat "$state_dir/pid"), log $state_dir/ray.log)
  dashboard + Jobs API: $url   (auth token: ~/.ray/auth_token)
  submit a run:         python -m rtune submit --address $url -- train trainer.max_steps=50
  add a worker node:    scripts/cluster/start_cluster.sh --join $host:$port   (on that machine, with the same ~/.ray/auth_token)
  stop:                 scripts/cluster/stop_cluster.sh --port $port
MSG
    exit 0
  fi
  kill -0 "$(cat "$state_dir/pid")" 2>/dev/null || { echo "start_cluster.sh: ray start failed:" >&2; tail -20 "$state_dir/ray.log" >&2; exit 1; }
  sleep 1
done
echo "start_cluster.sh: the dashboard did not answer on $url within 90 s; see $state_dir/ray.log" >&2
exit 1
