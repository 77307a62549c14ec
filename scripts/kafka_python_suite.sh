#!/usr/bin/env bash
# Runs kafka-python's own integration suite (test/integration) against a zbroker broker's
# Kafka front door, and prints the summary with each failure's known class.
#
#   scripts/kafka_python_suite.sh /path/to/kafka-python-checkout [extra pytest args...]
#
# Fetches nothing: the checkout is yours (its kafka/ package is what the tests import, so
# check out the release you mean to test, e.g. the one zbroker's test extras install), and
# so is the interpreter that runs the suite:
#   KP_PYTHON      python with pytest, pytest-timeout (and, for the compression cases, lz4,
#                  python-snappy, zstandard); default: python3 on PATH. Made once with e.g.
#                  python3 -m venv /tmp/kp-venv && /tmp/kp-venv/bin/pip install pytest \
#                      pytest-mock pytest-timeout lz4 python-snappy zstandard crc32c xxhash
#   ZBROKER_PYTHON python that runs the broker; default: this repo's .venv/bin/python, else python3
#   KAFKA_VERSION  the release the suite pins its clients to; default 4.3, the newest
#                  kafka-python 3.0 knows (zbroker's ApiVersions identify it as 4.2)
#   KEEP_DATA=1    keep the broker's data dir and log (printed at the end)
#
# The broker gets a fresh data dir and free loopback ports (native, its gossip port + 1,
# Kafka); auto topic creation is on (the default). The suite finds it through KAFKA_URI;
# KAFKA_ROOT points at an empty dir because the fixtures insist on a Kafka install dir even
# when they never start one. Below KAFKA_VERSION 4.0 test_ssl_integration.py is left out:
# its fixture starts its own ZooKeeper and loops until the suite's timeout.
#
# Exit status: 0 when every failure and error is one of the known classes below, 1 when
# there is an unclassified one (or the broker would not start), 2 on bad usage.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$1/test/integration/conftest.py" ] || [ ! -d "$1/kafka" ]; then
    echo "usage: $0 KAFKA_PYTHON_CHECKOUT [pytest args...]  (a checkout with kafka/ and test/integration/)" >&2
    exit 2
fi
CHECKOUT=$(cd "$1" && pwd)
shift
REPO=$(cd "$(dirname "$0")/.." && pwd)
KP_PYTHON=${KP_PYTHON:-python3}
if [ -z "${ZBROKER_PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then ZBROKER_PYTHON="$REPO/.venv/bin/python"; else ZBROKER_PYTHON=python3; fi
fi
export KAFKA_VERSION=${KAFKA_VERSION:-4.3}

if ! "$KP_PYTHON" -c "import pytest, pytest_timeout" 2>/dev/null; then
    echo "$KP_PYTHON lacks pytest or pytest-timeout: set KP_PYTHON (see the head of $0)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kp-suite.XXXXXX")
mkdir -p "$WORK/kafka-root"
BROKER_PID=""
stop_broker() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$BROKER_PID" 2>/dev/null && kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
}
PYTEST_PID=""
cleanup() {
    if [ -n "$PYTEST_PID" ]; then kill -TERM "$PYTEST_PID" 2>/dev/null || true; wait "$PYTEST_PID" 2>/dev/null || true; fi
    stop_broker
    if [ "${KEEP_DATA:-0}" = 1 ]; then echo "kept: $WORK (broker.log, data/, junit.xml)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports below the ephemeral range (a port from bind-to-0 may be handed out
# again before the broker binds it): native P with P+1 (gossip) free too, and Kafka K.
free_ports() {
    "$ZBROKER_PYTHON" - <<'EOF'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
rng, got = random.Random(), []
while len(got) < 2:
    p = rng.randint(max(1024, low - 12000), low - 2)
    if free(p) and free(p + 1) and not any(abs(p - q) < 2 for q in got):
        got.append(p)
print(*got)
EOF
}

started=""
for attempt in 1 2 3; do
    read -r NATIVE_PORT KAFKA_PORT < <(free_ports)
    rm -rf "$WORK/data"
    (cd "$REPO" && exec "$ZBROKER_PYTHON" -m zbroker serve --data-dir "$WORK/data" \
        --listen "127.0.0.1:$NATIVE_PORT" --kafka-listen "127.0.0.1:$KAFKA_PORT") >"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    if "$ZBROKER_PYTHON" - "$KAFKA_PORT" "$BROKER_PID" <<'EOF'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)  # the broker exited (a port taken meanwhile, ...)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
    then started=1; break; fi
    echo "broker did not start (attempt $attempt):" >&2
    tail -5 "$WORK/broker.log" >&2
    stop_broker
done
if [ -z "$started" ]; then exit 1; fi

IGNORE=()
if "$KP_PYTHON" -c "import os, sys; v = tuple(map(int, os.environ['KAFKA_VERSION'].split('.'))); sys.exit(0 if v < (4, 0) else 1)"; then
    IGNORE=(--ignore=test/integration/test_ssl_integration.py)
fi
KAFKA_PYTHON_VERSION=$(cd "$CHECKOUT" && "$KP_PYTHON" -c "import kafka; print(kafka.__version__)")
echo "kafka-python $KAFKA_PYTHON_VERSION ($CHECKOUT), KAFKA_VERSION=$KAFKA_VERSION," \
     "zbroker $(git -C "$REPO" rev-parse --short HEAD) pid $BROKER_PID kafka=127.0.0.1:$KAFKA_PORT native=127.0.0.1:$NATIVE_PORT"

# In the background, so that a signal to this script is handled (and stops both) at once.
(cd "$CHECKOUT" && KAFKA_URI="tcp://127.0.0.1:$KAFKA_PORT" KAFKA_ROOT="$WORK/kafka-root" \
    exec "$KP_PYTHON" -m pytest test/integration "${IGNORE[@]}" -p no:cacheprovider -q -rfEs \
    --timeout=120 -o log_level=WARNING -o log_cli=false --junitxml="$WORK/junit.xml" "$@") >"$WORK/pytest.out" 2>&1 &
PYTEST_PID=$!
PYTEST_RC=0
wait "$PYTEST_PID" || PYTEST_RC=$?
PYTEST_PID=""
stop_broker
grep -E "^(FAILED|ERROR|SKIPPED) " "$WORK/pytest.out" || true
grep -E "(passed|failed|error|skipped).* in [0-9.]+s" "$WORK/pytest.out" | tail -n 1 || tail -n 5 "$WORK/pytest.out"

# Each failure's class: (b) a feature zbroker documents as not served (docs/kafka.md),
# (c) something only a real Kafka deployment has (JVM tools, ZooKeeper, its exact configs).
"$KP_PYTHON" - "$WORK/junit.xml" "$PYTEST_RC" <<'EOF'
import sys
import xml.etree.ElementTree as ET

KNOWN = {
    "test_create_describe_delete_acls": "b: ACLs (DescribeAcls/CreateAcls/DeleteAcls) not served",
    "test_create_partitions": "b+c: manual replica assignments in CreatePartitions refused (INVALID_REPLICA_ASSIGNMENT); they name broker 0, the suite's own broker id",
    "test_elect_leaders": "b: ElectLeaders not served (the controller elects leaders itself)",
    "test_describe_log_dirs": "b: DescribeLogDirs not served",
    "test_alter_replica_log_dirs": "b: DescribeLogDirs/AlterReplicaLogDirs not served",
    "test_describe_metadata_quorum": "b: DescribeQuorum (KRaft's quorum) not served",
    "test_alter_partition_reassignments": "b: AlterPartitionReassignments not served",
    "test_list_partition_reassignments": "b: ListPartitionReassignments not served",
    "test_describe_topic_partitions": "b: DescribeTopicPartitions not served",
    "test_describe_topic_partitions_pagination": "b: DescribeTopicPartitions not served",
    "test_list_config_resources": "b: ListConfigResources not served",
    "test_kafka_version_infer": "b: ApiVersions identify zbroker as Kafka 4.2 (no DescribeLogDirs v5 to say 4.3); passes with KAFKA_VERSION=4.2",
    "test_transactional_producer_messages": "b: transactions refused (INVALID_TXN_STATE)",
    "test_transactional_producer_offsets": "b: transactions refused (INVALID_TXN_STATE)",
    "test_ssl_handshake": "c+b: starts its own SSL broker with the JVM tools (kafka-storage.sh); SSL not served",
    "test_legacy_kafka_client_ssl": "c+b: starts its own SSL broker with the JVM tools (kafka-storage.sh); SSL not served",
    "test_describe_configs_broker_resource_returns_configs":
        "c: below 4.0 asserts a ZooKeeper-era Kafka's config_source/read_only for advertised.listeners",
}
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as e:
    print(f"no junit report ({e}); pytest exit status {sys.argv[2]}")
    sys.exit(1)
counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
unknown = []
print("\nclassified failures and errors:")
for case in root.iter("testcase"):
    outcome = "passed"
    for child in case:
        if child.tag in ("failure", "error", "skipped"):
            outcome = {"failure": "failed"}.get(child.tag, child.tag)
            if child.tag == "error" and any(c.tag == "failure" for c in case):
                outcome = "failed"
    counts[outcome] += 1
    if outcome in ("failed", "error"):
        name = case.get("name").split("[")[0]
        why = KNOWN.get(name)
        print(f"  {outcome:6} {case.get('classname')}::{case.get('name')}: {why or 'UNCLASSIFIED'}")
        if why is None:
            unknown.append(case.get("name"))
print("\ntotals: {passed} passed, {failed} failed, {skipped} skipped, {error} errors".format(**counts))
if unknown:
    print(f"{len(unknown)} unclassified: {', '.join(unknown)}")
    sys.exit(1)
if sys.argv[2] not in ("0", "1"):
    print(f"pytest exit status {sys.argv[2]} (interrupted or internal error)")
    sys.exit(1)
print("every failure is a known class (b or c)")
EOF
