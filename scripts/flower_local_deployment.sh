#!/usr/bin/env bash
# Flower's Deployment Engine on this machine, step by step: a SuperLink and one SuperNode (with
# its ClientApp worker) per client on 127.0.0.1, with TLS and SuperNode authentication, running
# an ILoRA experiment. Every command is printed before it runs; on many machines the same
# commands run where the comments say (see docs/DEPLOYMENT.md).
#
#   scripts/flower_local_deployment.sh                 # configs/smoke.yaml, 4 SuperNodes
#   CONFIG=configs/demo.yaml NODES=6 WORK=runs/trial scripts/flower_local_deployment.sh
#
# Needs `pip install 'ilora[flower]'` (the `ilora`, `flwr` and `flower-supernode` commands on
# PATH). Everything goes to $WORK; the processes it starts are
# stopped when it exits, also on Ctrl-C or an error.
set -euo pipefail

CONFIG=${CONFIG:-configs/smoke.yaml}
NODES=${NODES:-4}                       # one SuperNode per client: data.num_clients
WORK=${WORK:-runs/flower-local}
PORT=${PORT:-9443}                      # the SuperLink's HTTPS port (Fleet, Control, Runtime APIs)
CONNECTION=local-trial
export FLWR_TELEMETRY_ENABLED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -x .venv/bin/ilora ]; then export PATH="$PWD/.venv/bin:$PATH"; fi   # in a checkout

if [ -e "$WORK" ]; then
  echo "$WORK exists; remove it or pick another WORK=..." >&2
  exit 2
fi
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill -- -"$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all EXIT
set -m   # each background command gets its own process group, so stop_all ends its children too
say() { printf '\n+ %s\n' "$*"; }

# 1. Anywhere: the trial CA, the SuperLink's certificate (localhost, 127.0.0.1) and node keys.
#    In production: the certificate from your CA; each node makes its own key on its machine.
say ilora flower certs "$WORK/certs" --nodes "$NODES"
ilora flower certs "$WORK/certs" --nodes "$NODES"

# 2. On the machine you submit from: the Flower app (pyproject.toml + the experiment YAML).
say ilora flower new "$WORK/app" --config "$CONFIG" --set "data.num_clients=$NODES"
ilora flower new "$WORK/app" --config "$CONFIG" --set "data.num_clients=$NODES"

# 3. On the server: the SuperLink, TLS on, only registered SuperNodes admitted, nothing installed
#    at run time; its Control and Runtime APIs answer only this machine. The results land in
#    its working directory ($WORK here). On many machines: --host 0.0.0.0, so that SuperNodes
#    elsewhere reach its Fleet API (TLS, then a registered key, authenticates each of them).
say ilora flower superlink ... "(log: $WORK/logs/superlink.log)"
(cd "$WORK" && FLWR_HOME="$WORK/home/superlink" exec ilora flower superlink \
  --host 127.0.0.1 --port "$PORT" \
  --ssl-ca-certfile certs/ca.crt --ssl-certfile certs/server.pem --ssl-keyfile certs/server.key \
  --enable-supernode-auth --disable-runtime-dependency-installation \
  >"$WORK/logs/superlink.log" 2>&1) &
PIDS+=($!)
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done

# 4. On the server: a SuperLink connection for the operator's `flwr` CLI (in $FLWR_HOME).
export FLWR_HOME="$WORK/home/cli"
mkdir -p "$FLWR_HOME"
cat >"$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "$CONNECTION"

[superlink.$CONNECTION]
address = "127.0.0.1:$PORT"
root-certificates = "$WORK/certs/ca.crt"
EOF

# 5. On the server: register each SuperNode's public key with the SuperLink.
for i in $(seq 0 $((NODES - 1))); do
  say flwr supernode register "$WORK/certs/nodes/node-$i.pub" "$CONNECTION"
  flwr supernode register "$WORK/certs/nodes/node-$i.pub" "$CONNECTION"
done

# 6. On each client machine: a SuperNode holding client i (add rank=<r> to override its rank)
#    and its long-lived ClientApp worker; a secret shared by the two signs the worker's requests.
for i in $(seq 0 $((NODES - 1))); do
  SECRET="$WORK/home/node-$i/superexec.secret"
  mkdir -p "$WORK/home/node-$i"
  (umask 077 && head -c 32 /dev/urandom >"$SECRET")
  say flower-supernode --node-config "partition-id=$i state-dir=..." --isolation process ... \
    "(log: $WORK/logs/node-$i.log)"
  FLWR_HOME="$WORK/home/node-$i" flower-supernode \
    --superlink "127.0.0.1:$PORT" --root-certificates "$WORK/certs/ca.crt" \
    --auth-supernode-private-key "$WORK/certs/nodes/node-$i.key" \
    --node-config "partition-id=$i state-dir=\"$WORK/home/node-$i/state\"" \
    --port $((PORT + 1 + i)) \
    --isolation process --superexec-auth-secret-file "$SECRET" \
    >"$WORK/logs/node-$i.log" 2>&1 &
  PIDS+=($!)
  say ilora flower worker --runtime-api-address "127.0.0.1:$((PORT + 1 + i))" ... \
    "(log: $WORK/logs/node-$i-worker.log)"
  ilora flower worker --runtime-api-address "127.0.0.1:$((PORT + 1 + i))" \
    --superexec-auth-secret-file "$SECRET" >"$WORK/logs/node-$i-worker.log" 2>&1 &
  PIDS+=($!)
done

# 7. Submit the run and follow it until it ends (exit code 3: the run stopped, with its
#    reason); then list the runs.
say ilora flower run "$WORK/app" "$CONNECTION" --run-config "out=\"$WORK/run\""
ilora flower run "$WORK/app" "$CONNECTION" --run-config "out=\"$WORK/run\""
say flwr ls "$CONNECTION"
flwr ls "$CONNECTION"
say cat "$WORK/run/summary.json"
cat "$WORK/run/summary.json"
