#!/usr/bin/env bash
# Stop the Ray node that scripts/cluster/start_cluster.sh started, and only that one (other Ray clusters on
# this machine keep running; `ray stop` would kill them all).
#
#   scripts/cluster/stop_cluster.sh [--port N]        the head started with that GCS port [RTUNE_RAY_PORT, 6379]
#   scripts/cluster/stop_cluster.sh --join HEAD:PORT  the worker node that joined HEAD:PORT
set -euo pipefail

port=${RTUNE_RAY_PORT:-6379}
join=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --join) join=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stop_cluster.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
name=$([ -n "$join" ] && echo "worker-${join//[:.]/-}" || echo "$port")
state_dir=${RTUNE_CLUSTER_DIR:-$HOME/.cache/rtune/cluster-$name}
if [ ! -f "$state_dir/pid" ]; then
  echo "stop_cluster.sh: no node started by start_cluster.sh is recorded in $state_dir" >&2
  exit 2
fi
pid=$(cat "$state_dir/pid")
temp_dir=$(cat "$state_dir/temp_dir" 2>/dev/null || true)

group_alive() { [ -n "$(ps -eo pgid= | awk -v g="$pid" '$1 == g')" ]; }

if kill -0 "$pid" 2>/dev/null; then
  # SIGTERM to `ray start --block` alone: it stops the processes it started, then exits.
  kill -TERM "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
fi
# Its agents can outlive it by half a minute: a short grace, then whatever is left of this node's
# session (setsid made pid its process group) is killed.
for _ in $(seq 1 3); do group_alive || break; sleep 1; done
if group_alive; then
  kill -KILL -- "-$pid" 2>/dev/null || true
fi
# Workers re-parented out of the group still name this node's temp dir in their arguments.
if [ -n "$temp_dir" ]; then
  pkill -KILL -f -- "$temp_dir/" 2>/dev/null || true
fi
# Actors renamed by Ray (`ray::TrainController`) name nothing; one was seen outliving its stopped node by
# hours (400 MB). They carry the node's tag in their environment (start_cluster.sh).
for environ in $(grep -lzx -- "RTUNE_NODE_TAG=$state_dir" /proc/[0-9]*/environ 2>/dev/null || true); do
  straggler=${environ#/proc/}; straggler=${straggler%/environ}
  [ "$straggler" != "$$" ] && kill -KILL "$straggler" 2>/dev/null || true
done
rm -f "$state_dir/pid" "$state_dir/dashboard_url"
echo "stopped the Ray node started by start_cluster.sh (pid $pid)"
