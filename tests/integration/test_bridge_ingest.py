"""Ingest bridges on a real broker, fed by plain pyzmq applications (processes that import only
zmq): PULL bound, SUB connected with prefixes, XSUB bound; topic from the config or frame 0,
key from a frame; records read back with ``zbroker consume`` and counted exactly; CURVE and
curve = false on a secured broker; bad messages counted while the broker keeps serving."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

from bridge_apps import BridgeBroker, finish, start_app, stop
from support import free_port, key_pair, run_cli, wait_until

pytestmark = pytest.mark.timeout(120)


def consume(b: BridgeBroker, topic: str, count: int, *extra: str) -> list[str]:
    """Every record of ``topic`` from the beginning (``count`` expected: stops there, or 5 s after the last)."""
    proc = run_cli(*b.cli_options(), "consume", topic, "--from-beginning", "--max-messages", str(count + 1),
                   "--timeout-ms", "3000", *extra, bootstrap=b.proc.bootstrap)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().splitlines()


def settled(b: BridgeBroker, name: str, at_least: int) -> dict:
    """The bridge's status once it has received ``at_least`` messages and nothing is in flight."""
    def done():
        s = b.status()[name]
        return s if s["received"] >= at_least and s["in_flight"] == 0 else None
    return wait_until(done, timeout=60, what=f"bridge {name} to receive {at_least} messages and store them")


@pytest.fixture
def make(tmp_path):
    made: list[BridgeBroker] = []

    def build(bridges, **options) -> BridgeBroker:
        b = BridgeBroker(tmp_path / f"b{len(made)}", bridges, **options)
        made.append(b)
        return b.start()

    yield build
    for b in made:
        b.close()


def test_a_push_app_into_a_bound_pull_with_the_topic_from_the_config(make):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    b = make([{"name": "sensors", "socket": "pull", "endpoint": endpoint, "topic": "sensors"}])
    app = start_app(type="PUSH", endpoint=endpoint, frames=["reading {i}"], count=3000)
    assert "DONE 3000" in finish(app)
    s = settled(b, "sensors", 3000)
    assert (s["received"], s["stored"], s["dropped"], s["failed"], s["kind"], s["broker"]) == (3000, 3000, 0, 0, "ingest", 1)
    lines = consume(b, "sensors", 3000)
    assert sorted(lines) == sorted(f"reading {i}" for i in range(3000))


def test_a_push_app_naming_the_topic_in_frame0_and_the_key_in_frame1(make):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    b = make([{"name": "events", "socket": "pull", "endpoint": endpoint, "topic_from": "frame0", "key_from": "frame1"}])
    app = start_app(type="PUSH", endpoint=endpoint, frames=["events.a", "key{i}", "ignored", "value{i}"], count=500)
    assert "DONE 500" in finish(app)
    settled(b, "events", 500)
    lines = consume(b, "events.a", 500, "--print-key")
    assert sorted(lines) == sorted(f"key{i}\tvalue{i}" for i in range(500))


def _after_probe(b: BridgeBroker, name: str, app) -> None:
    """Wait until the bridge has seen the app's probe (its subscription reached the PUB), then say go."""
    wait_until(lambda: b.status()[name]["received"] > 0, timeout=30, what="the probe to reach the bridge")
    app.stdin.write("go\n")
    app.stdin.flush()


def test_a_pub_app_read_by_a_sub_bridge_that_connects_and_subscribes_to_prefixes(make):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    app = start_app(type="PUB", endpoint=endpoint, bind=True, count=900, probe=["plant.probe", "p"],
                    frames=[["plant.a", "a{i}"], ["plant.b", "b{i}"], ["plant.c", "c{i}"]])
    try:
        b = make([{"name": "plant", "socket": "sub", "endpoint": endpoint, "topic_from": "frame0",
                   "subscribe": ["plant.a", "plant.b", "plant.probe"]}])
        _after_probe(b, "plant", app)
        assert "DONE 900" in finish(app)
    finally:
        stop(app)
    s = settled(b, "plant", 600)
    assert (s["dropped"], s["failed"], s["stored"]) == (0, 0, s["received"])
    assert sorted(consume(b, "plant.a", 300)) == sorted(f"a{i}" for i in range(0, 900, 3))
    assert sorted(consume(b, "plant.b", 300)) == sorted(f"b{i}" for i in range(1, 900, 3))
    topics = run_cli("topics", "list", bootstrap=b.proc.bootstrap).stdout.decode()
    assert "plant.c" not in topics  # never subscribed: the PUB never sent it


def test_pub_apps_connected_to_a_bound_xsub_send_only_what_it_subscribed(make):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    b = make([{"name": "hub", "socket": "xsub", "endpoint": endpoint, "topic": "hub", "subscribe": ["keep", "probe"]}])
    for n, kind in enumerate(["keep", "drop", "keep"]):  # one after the other: each app's probe is told apart
        seen = b.status()["hub"]["received"]
        app = start_app(type="PUB", endpoint=endpoint, frames=[f"{kind}-{n}-{{i}}"], count=400, probe=["probe"])
        try:
            wait_until(lambda: b.status()["hub"]["received"] > seen, timeout=30, what="the probe")
            app.stdin.write("go\n")
            app.stdin.flush()
            assert "DONE 400" in finish(app)
        finally:
            stop(app)
        if kind == "keep":
            settled(b, "hub", seen + 400)
    s = b.status()["hub"]
    lines = consume(b, "hub", s["stored"])
    numbered = [line for line in lines if line != "probe"]
    assert sorted(numbered) == sorted(f"keep-{n}-{i}" for n in (0, 2) for i in range(400))  # each once; no "drop"
    assert s["dropped"] == 0 and s["failed"] == 0 and s["stored"] == s["received"] == len(lines)


def test_bad_messages_are_counted_and_named_and_the_broker_keeps_serving(make):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    b = make([{"name": "strict", "socket": "pull", "endpoint": endpoint, "topic_from": "frame0", "key_from": "frame1"},
              ], cluster={"auto_create_topics": False})
    run_cli("topics", "create", "good", "--partitions", "1", bootstrap=b.proc.bootstrap).check_returncode()
    for frames, count in ((["good"], 7), (["bad topic!", "k", "v"], 5), (["missing", "k", "v"], 3),
                          (["good", "k{i}", "v{i}"], 20)):
        assert f"DONE {count}" in finish(start_app(type="PUSH", endpoint=endpoint, frames=frames, count=count))
    s = settled(b, "strict", 35)
    assert s["dropped_by_reason"] == {"too_few_frames": 7, "bad_topic": 5, "unknown_topic": 3}
    assert (s["received"], s["stored"], s["dropped"], s["failed"]) == (35, 20, 15, 0)
    assert sorted(consume(b, "good", 20)) == sorted(f"v{i}" for i in range(20))
    text = b.proc.log_text(None)
    assert re.search(r"bridge strict dropped a message of 1 frame\(s\); this bridge needs at least 3", text)
    assert "topic name 'bad topic!' must be" in text and "'missing', which does not exist" in text


def test_curve_on_a_secured_broker_and_curve_false_for_a_legacy_app(make, tmp_path):
    secure, legacy = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    b = make([{"name": "secure", "socket": "pull", "endpoint": secure, "topic": "sec"},
              {"name": "legacy", "socket": "pull", "endpoint": legacy, "topic": "leg", "curve": False}], curve=True)
    opts = b.cli_options()
    for topic in ("sec", "leg"):
        run_cli(*opts, "topics", "create", topic, "--partitions", "1", bootstrap=b.proc.bootstrap).check_returncode()
    for name, topic in (("secure", "sec"), ("legacy", "leg")):
        run_cli(*opts, "acl", "add", "--principal", f"Bridge:{name}", "--operation", "write", "--topic", topic,
                bootstrap=b.proc.bootstrap).check_returncode()
    _, public, secret = b.add_key("sensor")
    _, other, other_secret = key_pair(tmp_path / "elsewhere", "stranger")  # not in authorized_keys_dir
    stranger = start_app(type="PUSH", endpoint=secure, frames=["stranger {i}"], count=5, linger_ms=20000,
                         curve=[other.decode(), other_secret.decode(), b.public.decode()])
    wait_until(lambda: "refused a CURVE handshake domain=bridge key=" + other.decode() in b.proc.log_text(None), timeout=30,
               what="the stranger's key to be refused")
    keyed = start_app(type="PUSH", endpoint=secure, frames=["sealed {i}"], count=300,
                      curve=[public.decode(), secret.decode(), b.public.decode()])
    plain = start_app(type="PUSH", endpoint=legacy, frames=["old {i}"], count=300)
    try:
        assert "DONE 300" in finish(keyed) and "DONE 300" in finish(plain)
        for name in ("secure", "legacy"):
            s = settled(b, name, 300)
            assert (s["received"], s["stored"], s["failed"]) == (300, 300, 0), s
    finally:
        for app in (stranger, keyed, plain):
            stop(app)
    assert sorted(consume(b, "sec", 300)) == sorted(f"sealed {i}" for i in range(300))
    assert sorted(consume(b, "leg", 300)) == sorted(f"old {i}" for i in range(300))


def test_a_connecting_pull_is_a_curve_client_of_the_apps_server_key(make, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    _, app_public, app_secret = key_pair(tmp_path / "app", "app")
    b = make([{"name": "far", "socket": "pull", "endpoint": endpoint, "bind": False, "topic": "far",
               "server_key": app_public.decode()}], curve=True)
    run_cli(*b.cli_options(), "acl", "add", "--principal", "Bridge:far", "--operation", "all", "--topic", "far",
            bootstrap=b.proc.bootstrap).check_returncode()
    app = start_app(type="PUSH", endpoint=endpoint, bind=True, curve_server=app_secret.decode(), frames=["far {i}"], count=200)
    try:
        assert "DONE 200" in finish(app)
        settled(b, "far", 200)
    finally:
        stop(app)
    assert sorted(consume(b, "far", 200)) == sorted(f"far {i}" for i in range(200))


def test_an_endpoint_that_cannot_be_bound_stops_the_start_naming_the_bridge(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        b = BridgeBroker(tmp_path, [{"name": "clash", "socket": "pull", "endpoint": f"tcp://127.0.0.1:{port}", "topic": "t"}])
        try:
            with pytest.raises(RuntimeError):
                b.start()
            assert f"bridge clash: cannot bind pull tcp://127.0.0.1:{port}: Address already in use" in b.proc.log_text()
        finally:
            b.close()


def test_the_bridge_writes_as_its_own_principal_under_the_acls(make):
    """With security on, the records are written as ``Bridge:NAME``: a grant to another bridge
    or to the sending application's key does not help; until ``Bridge:NAME`` may write, the
    PULL bridge stores nothing, drops nothing and pushes back; the grant alone lets it go on."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    b = make([{"name": "meter", "socket": "pull", "endpoint": endpoint, "topic": "power", "hwm": 50}], curve=True)
    opts = b.cli_options()
    run_cli(*opts, "topics", "create", "power", "--partitions", "1", bootstrap=b.proc.bootstrap).check_returncode()
    _, public, secret = b.add_key("meterapp")
    for principal in ("Bridge:other", "User:meterapp"):  # neither is the bridge
        run_cli(*opts, "acl", "add", "--principal", principal, "--operation", "write", "--topic", "power",
                bootstrap=b.proc.bootstrap).check_returncode()
    # 2,000 frames of 1 KiB and a 16 KiB SO_SNDBUF: more than the bridge, its queue and the kernel buffers hold,
    # so the sender is still blocked when the status is read (400 small frames all fitted in the buffers)
    app = start_app(type="PUSH", endpoint=endpoint, frames=["kw {i}"], pad=1000, count=2000, hwm=50, sndbuf=16384,
                    curve=[public.decode(), secret.decode(), b.public.decode()])
    try:
        refused = wait_until(lambda: s if (s := b.status()["meter"])["received"] >= 50 else None, timeout=30,
                             what="the bridge to take what fits in flight")
        assert refused["state"] == "starting" and refused["stored"] == 0 and refused["dropped"] == 0, refused
        assert "Bridge:meter" in (refused.get("last_error") or ""), refused
        assert app.poll() is None  # the sender is held back, not dropped on
        run_cli(*opts, "acl", "add", "--principal", "Bridge:meter", "--operation", "write", "--topic", "power",
                bootstrap=b.proc.bootstrap).check_returncode()
        assert "DONE 2000" in finish(app)
        s = settled(b, "meter", 2000)
        assert (s["received"], s["stored"], s["dropped"], s["failed"]) == (2000, 2000, 0, 0), s
    finally:
        stop(app)
    assert consume(b, "power", 2000) == [f"kw {str(i).rjust(1000, '0')}" for i in range(2000)]


HOSTILE = r"""
import json, sys, zmq
a = json.loads(sys.argv[1])
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.setsockopt(zmq.LINGER, 10000)
s.connect(a["endpoint"])
if a["kind"] == "big":
    s.send(b"x" * a["size"])
else:
    s.send_multipart([b"f"] * (a["frames"] - 1) + [b"last"])
s.close()
ctx.term()
print("DONE", flush=True)
"""


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in KiB."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def test_hostile_senders_an_oversized_frame_and_a_message_of_very_many_frames(make):
    """A frame over max_message_bytes (+ slack) makes ZeroMQ drop that connection; a message of
    200,000 frames is held by libzmq until complete, then only its kept frames are copied out.
    Either way the broker keeps serving and its memory stays bounded (peak RSS checked)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    b = make([{"name": "open", "socket": "pull", "endpoint": endpoint, "topic": "open"}])
    run_cli("topics", "create", "open", "--partitions", "1", bootstrap=b.proc.bootstrap).check_returncode()
    pid = b.proc.proc.pid
    assert "DONE 10" in finish(start_app(type="PUSH", endpoint=endpoint, frames=["warm {i}"], count=10))
    settled(b, "open", 10)
    base = _memory(pid)["VmRSS"]
    rounds, frames = 3, 200_000
    after_first = None
    for r in range(rounds):
        for args in ({"kind": "big", "size": 4 << 20}, {"kind": "many", "frames": frames}):
            app = subprocess.Popen([sys.executable, "-c", HOSTILE, json.dumps({"endpoint": endpoint, **args})],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                out, err = app.communicate(timeout=60)
            finally:
                stop(app)
            assert "DONE" in out, err
        settled(b, "open", 10 + r + 1)  # the many-frame message arrived (as one record); the big one never does
        if after_first is None:
            after_first = _memory(pid)["VmRSS"]
    assert "DONE 100" in finish(start_app(type="PUSH", endpoint=endpoint, frames=["after {i}"], count=100))
    s = settled(b, "open", 10 + rounds + 100)
    assert (s["received"], s["stored"], s["dropped"], s["failed"]) == (113, 113, 0, 0), s
    lines = consume(b, "open", 113)
    assert lines.count("last") == rounds and sorted(line for line in lines if line.startswith("after")) == \
        sorted(f"after {i}" for i in range(100))
    memory = wait_until(lambda: _memory(pid), timeout=10, what="the broker's /proc status")
    peak_mib, grown_mib = (memory["VmHWM"] - base) / 1024, (memory["VmRSS"] - after_first) / 1024
    print(f"broker RSS at start {base / 1024:.0f} MiB; peak {peak_mib:.1f} MiB over it; grown {grown_mib:.1f} MiB after round 1")
    assert peak_mib < 120, f"peak RSS {peak_mib:.0f} MiB over the start"
    assert grown_mib < 20, f"RSS grew {grown_mib:.0f} MiB from round 1 to round {rounds}"
