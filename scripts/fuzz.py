#!/usr/bin/env python3
"""Fuzz a real broker through both doors, watch its memory, then check it still answers right.

    python scripts/fuzz.py [--frames 1000000] [--seed 1] [--concurrency 32]
    python scripts/fuzz.py --native HOST:PORT --kafka HOST:PORT [--pid PID] ...   (a running broker)

Without ``--native`` it starts a single-node broker (``zbroker serve``) on free loopback ports
with a temporary data dir and ``max_request_bytes`` of 8 MiB, and stops it at the end.

1. **Reference** (``tests/fuzzcheck.py``).  Every well-formed request is sent once, on a fresh
   topic and fresh groups: each native request type, and each Kafka API key the broker
   advertises at its lowest and highest version.  What matters in each answer -- error codes,
   offsets, partition numbers, whether records came back; not names, ids or timestamps -- is
   kept.  (A warm-up round before it creates ``__consumer_offsets``.)
2. **Fuzz.** ``--frames`` frames (a frame: one native ZeroMQ message or one Kafka request),
   half to each door, choices drawn from ``random.Random(--seed)`` through
   ``tests/fuzzcorpus.py`` (the corpus of the unit fuzzers):

   - native door: DEALER sockets (a quarter of ``--concurrency``, replaced every few thousand
     messages), each with at most 64 requests awaiting replies: valid requests of every type
     with fields of wrong types, huge values or missing, extra payload frames; random frames;
     arbitrary msgpack values; messages of hundreds of frames; now and then a frame over
     ``max_request_bytes``;
   - Kafka door: ``--concurrency`` TCP connections at once.  Each sends 1-8 requests (the
     valid request of every advertised API and version, fields set to their type's extremes,
     bytes flipped or cut, lengths that lie, any API key and version, the SASL exchange; now
     and then a size prefix that is negative, too large or wrong), cut into random writes,
     then a well-formed ApiVersions; it ends when the broker answers that or closes, or after
     2 s of silence.  Some connections stop half-way through a request, some close their
     sending side after writing (half-closed), and every 50,000 frames 300 connections open at
     once.  Every reply must be framed (a size prefix that fits), every native reply a msgpack
     map with the request's ``cid`` and an integer ``error``.

   The broker's RSS (``/proc/PID/status``) is sampled every 0.25 s.
3. **Check.** The broker is alive, the reference requests are sent again on another fresh
   topic and groups, and each must be answered as before (and the data path's -- produce,
   fetch, list offsets, metadata, ApiVersions... -- without an error, records included); a
   broker started here must have logged no ERROR (a handler that raised) and must stop
   cleanly on SIGTERM.

It prints frames sent, duration, RSS before/peak/after and the check results, and exits 1 on
any failure (a dead broker, a check answered otherwise or not at all, a malformed reply, an
ERROR line, RSS over ``--max-rss-mb``).
"""

from __future__ import annotations

import argparse
import bisect
import errno
import os
import random
import selectors
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path

import msgpack
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import BrokerProcess  # noqa: E402
from tests.fuzzcheck import Checker, compare, kafka_api_versions, split_address  # noqa: E402
from tests.fuzzcorpus import (  # noqa: E402
    NATIVE_BATCH, RandomChooser, encode_request, kafka_message, native_message, one_in, sasl_messages, served_versions,
    size_prefixed, split,
)
from unit.test_fuzz_router import VALID as NATIVE_VALID  # noqa: E402  (the native unit fuzzer's table: every type)
from zbroker import protocol as P  # noqa: E402

MAX_REQUEST = 8 << 20  # the started broker's max_request_bytes (the least the config takes)
NATIVE_WINDOW = 64  # requests awaiting replies per DEALER
REPLY_PATIENCE_S = 2.0  # a native reply or a Kafka connection's next byte, at most this late (then given up)
SOCKET_LIFE = 5000  # native messages a DEALER sends before it is replaced
BURST_EVERY, BURST_SIZE = 50_000, 300
SENTINEL_CID = 0x7EADBEEF

# -- the broker -----------------------------------------------------------------------------

class Rss:
    """Samples a process's resident set size every ``interval`` seconds on a thread."""

    def __init__(self, pid: int | None, interval: float = 0.25) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def read(self) -> int:
        """The RSS now, in bytes (0 without a pid)."""
        if self.pid is None:
            return 0
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.samples.append((time.monotonic(), self.read()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


def start_broker(root: Path) -> BrokerProcess:
    """A single-node broker on free loopback ports, data in ``root``, WARNING and up logged."""
    config = root / "broker.toml"
    broker = BrokerProcess(root / "data", config=config, extra_args=["--log-level", "warning"])
    config.write_text(f"[cluster]\nmax_request_bytes = {MAX_REQUEST}\n\n"
                      f'[[broker]]\nid = 1\nhost = "127.0.0.1"\nport = {broker.port}\nkafka_port = {broker.kafka_port}\n'
                      f'data_dir = "{root / "data"}"\n')
    return broker.start()


# -- the fuzzers --------------------------------------------------------------------------------

class NativeFuzzer:
    """DEALER sockets sending mutated native messages, each with a bounded window of replies."""

    def __init__(self, address: str, ch: RandomChooser, sockets: int, stats: Counter, failures: list) -> None:
        self.address, self.ch, self.stats, self.failures = address, ch, stats, failures
        self.ctx = zmq.Context.instance()
        self.socks = [self._socket() for _ in range(sockets)]
        self.poller = zmq.Poller()
        for s in self.socks:
            self.poller.register(s["sock"], zmq.POLLIN)

    def _socket(self) -> dict:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://{self.address}")
        return {"sock": sock, "waiting": deque(), "sent": 0}

    def message(self) -> tuple[list[bytes], bool]:
        """One message and whether it expects a reply."""
        ch = self.ch
        how = ch.integer(0, 99)
        if how < 55:
            header, frames = native_message(ch, NATIVE_VALID, huge_one_in=50)
            wants = not (header.get("type") == P.PRODUCE and header.get("acks") == 0)
            return frames, wants and _native_cid(frames[0]) is not None
        if how < 65:
            kind = ch.choice(sorted(NATIVE_VALID))
            header = {"v": 1, "type": kind, "cid": ch.integer(0, 2**31), **NATIVE_VALID[kind]}
            return [msgpack.packb(header), *([NATIVE_BATCH] if kind == P.PRODUCE else [])], True
        if how < 80:
            frames = [ch.binary(256) for _ in range(ch.integer(1, 4))]
        elif how < 92:
            value = ch.value()
            if isinstance(value, dict) and one_in(ch, 2):
                value = {"v": 1, "type": ch.choice(sorted(NATIVE_VALID)), "cid": ch.integer(0, 99), **value}
            frames = [msgpack.packb(value, use_bin_type=True)]
        elif how < 98:  # many frames: a produce of hundreds of payloads
            header = {"v": 1, "type": P.PRODUCE, "cid": ch.integer(0, 2**31), "acks": 1, "timeout_ms": 1000,
                      "batches": [{"topic": "t", "partition": 0}] * ch.integer(0, 3)}
            frames = [msgpack.packb(header)] + [ch.choice([NATIVE_BATCH, b"", b"x" * 100]) for _ in range(ch.integer(100, 1000))]
        elif one_in(ch, 100):  # a frame over max_request_bytes
            frames = [msgpack.packb({"v": 1, "type": P.METADATA, "cid": 1, "topics": ["x" * (MAX_REQUEST + 1)]})]
        else:
            frames = [msgpack.packb({"v": 1, "type": P.METADATA, "cid": ch.integer(0, 2**31)})]
        return frames, _native_cid(frames[0]) is not None

    def step(self, now: float) -> int:
        """Receive what arrived, expire what waited too long, send a message on each socket
        with room; the number sent."""
        self.receive(now)
        sent = 0
        for i, s in enumerate(self.socks):
            waiting = s["waiting"]
            while waiting and waiting[0] < now - REPLY_PATIENCE_S:
                waiting.popleft()
                self.stats["native replies given up"] += 1
            if len(waiting) >= NATIVE_WINDOW:
                continue
            frames, wants = self.message()
            try:
                s["sock"].send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                self.stats["native sends refused (queue full)"] += 1
                continue
            sent += 1
            s["sent"] += 1
            if wants:
                waiting.append(now)
            if s["sent"] >= SOCKET_LIFE:
                self.poller.unregister(s["sock"])
                s["sock"].close(linger=0)
                self.socks[i] = self._socket()
                self.poller.register(self.socks[i]["sock"], zmq.POLLIN)
                self.stats["native sockets replaced"] += 1
        return sent

    def receive(self, now: float, timeout_ms: int = 0) -> None:
        for sock, _ in self.poller.poll(timeout_ms):
            s = next(s for s in self.socks if s["sock"] is sock)
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.stats["native replies"] += 1
                if s["waiting"]:
                    s["waiting"].popleft()
                try:
                    reply = msgpack.unpackb(frames[0], raw=False)
                    ok = isinstance(reply, dict) and isinstance(reply.get("cid"), int) and isinstance(reply.get("error"), int)
                except Exception:
                    ok = False
                if not ok:
                    self.failures.append(f"malformed native reply: {frames[0][:80]!r}")

    def close(self) -> None:
        for s in self.socks:
            s["sock"].close(linger=0)


def _native_cid(frame: bytes) -> int | None:
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception:
        return None
    cid = header.get("cid") if isinstance(header, dict) else None
    return cid if isinstance(cid, int) and not isinstance(cid, bool) else None


class KafkaConn:
    """One fuzzing connection: bytes to write, replies read, why it ended."""

    __slots__ = ("sock", "out", "inbuf", "deadline", "lied", "half_close", "frame_ends", "written", "ended", "apis",
                 "replies")

    def __init__(self, sock: socket.socket, out: deque, frame_ends: list[int], lied: bool, half_close: bool,
                 apis: list[str], now: float) -> None:
        self.sock, self.out, self.frame_ends, self.lied, self.half_close = sock, out, frame_ends, lied, half_close
        self.apis = apis  # "key/version" of each request, for the report of connections that went silent
        self.replies = 0
        self.inbuf = bytearray()
        self.deadline = now + REPLY_PATIENCE_S
        self.written = 0  # bytes
        self.ended = False

    @property
    def frames_written(self) -> int:
        return bisect.bisect_right(self.frame_ends, self.written)


class KafkaFuzzer:
    """Bounded concurrent TCP connections, each carrying a few fuzzed Kafka requests."""

    def __init__(self, address: str, ch: RandomChooser, served: list[tuple[int, int]], concurrency: int, stats: Counter,
                 failures: list) -> None:
        self.address = split_address(address)
        self.ch, self.served, self.concurrency, self.stats, self.failures = ch, served, concurrency, stats, failures
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, KafkaConn] = {}
        self.ended: list[KafkaConn] = []
        self.silent: list[str] = []  # what went silent with honest framing: replies to its requests (key/version)
        self.sentinel = encode_request(18, 0, SENTINEL_CID, b"")  # ApiVersions v0: its answer says all before it was

    def plan(self) -> tuple[list[bytes], list[int], bool, bool, list[str]]:
        """``(writes, frame ends, lied, half_close, apis)`` of a new connection: the bytes in
        the writes it makes, where each frame ends in them, whether a size prefix lies,
        whether it closes its sending side after writing, each request's key/version."""
        ch = self.ch
        how = ch.integer(0, 99)
        if how < 4:  # half-open: part of a request, then silence until we give up
            self.stats["Kafka half-open"] += 1
            message = size_prefixed(ch, kafka_message(ch, self.served), MAX_REQUEST) if one_in(ch, 2) else b"\0\0"
            return [message[:ch.integer(1, max(1, len(message) - 1))]], [], True, False, []
        messages = sasl_messages(ch) if how < 10 else [kafka_message(ch, self.served, cid=i) for i in range(ch.integer(1, 8))]
        stream, lied, ends = b"", False, []
        for m in [*messages, self.sentinel]:
            framed = size_prefixed(ch, m, MAX_REQUEST) if m is not self.sentinel and one_in(ch, 12) else struct.pack(">i", len(m)) + m
            lied |= struct.unpack_from(">i", framed)[0] != len(m)
            stream += framed
            ends.append(len(stream))
        half_close = one_in(ch, 25)
        self.stats["Kafka half-closed" if half_close else "Kafka request connections"] += 1
        apis = ["%d/%d" % struct.unpack_from(">hh", m) if len(m) >= 4 else "short" for m in messages]
        return split(ch, stream), ends, lied, half_close, apis

    def open(self, now: float) -> int:
        """A new connection with a plan; the frames it plans to send."""
        writes, ends, lied, half_close, apis = self.plan()
        sock = socket.socket()
        sock.setblocking(False)
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.stats["Kafka connects refused"] += 1
            return 0
        conn = KafkaConn(sock, deque(writes), ends, lied, half_close, apis, now)
        self.conns[sock.fileno()] = conn
        self.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        return len(ends)

    @property
    def planned(self) -> int:
        """Frames the open connections have yet to write."""
        return sum(len(c.frame_ends) - c.frames_written for c in self.conns.values())

    def burst(self, n: int) -> None:
        """``n`` connections at once, each sending 0-3 bytes once connected, then closed."""
        socks = []
        with selectors.DefaultSelector() as sel:
            for _ in range(n):
                s = socket.socket()
                s.setblocking(False)
                if s.connect_ex(self.address) in (0, errno.EINPROGRESS):
                    socks.append(s)
                    sel.register(s, selectors.EVENT_WRITE)
                else:
                    s.close()
            waiting, deadline = len(socks), time.monotonic() + 5
            while waiting and time.monotonic() < deadline:
                for key, _ in sel.select(0.1):
                    sel.unregister(key.fileobj)
                    waiting -= 1
                    try:
                        key.fileobj.send(b"\0\0\0"[:self.ch.integer(0, 3)])
                        self.stats["Kafka burst connections"] += 1
                    except OSError:
                        pass
        for s in socks:
            s.close()
        self.stats["Kafka connection bursts"] += 1

    def step(self, now: float, budget: int, timeout: float = 0.0) -> int:
        """Open connections up to the concurrency while ``budget`` frames remain unplanned,
        serve the ready ones, end the silent ones; the frames written meanwhile by connections
        that ended."""
        planned = self.planned
        while len(self.conns) < self.concurrency and planned < budget:
            planned += self.open(now)
        written = 0
        for key, events in self.selector.select(timeout):
            conn: KafkaConn = key.data
            if events & selectors.EVENT_WRITE and not conn.ended:
                self._write(conn, now)
            if events & selectors.EVENT_READ and not conn.ended:
                self._read(conn, now)
        for conn in [c for c in self.conns.values() if c.deadline < now]:
            self.stats[f"Kafka silent ({'lying size or half-open' if conn.lied else 'honest framing'})"] += 1
            if not conn.lied and not conn.out:  # all written, framed right: which request is the broker still on?
                self.silent.append(f"{conn.replies} replies to [{' '.join(conn.apis)}]")
            self._end(conn)
        for conn in self.ended:
            written += conn.frames_written
        self.ended = []
        return written

    def _write(self, conn: KafkaConn, now: float) -> None:
        while conn.out:
            try:
                n = conn.sock.send(conn.out[0])
            except BlockingIOError:
                return
            except OSError:
                self.stats["Kafka closed by the broker"] += 1
                self._end(conn)
                return
            conn.written += n
            conn.deadline = now + REPLY_PATIENCE_S
            if n < len(conn.out[0]):
                conn.out[0] = conn.out[0][n:]
                return
            conn.out.popleft()
        if conn.half_close:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _read(self, conn: KafkaConn, now: float) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.stats["Kafka closed by the broker"] += 1
            self._end(conn)
            return
        conn.deadline = now + REPLY_PATIENCE_S
        buf = conn.inbuf
        buf += data
        while len(buf) >= 4:
            (size,) = struct.unpack_from(">i", buf)
            if not 4 <= size <= 64 << 20:
                self.failures.append(f"malformed Kafka reply: size prefix {size}")
                self._end(conn)
                return
            if len(buf) < 4 + size:
                return
            (cid,) = struct.unpack_from(">i", buf, 4)
            del buf[:4 + size]
            conn.replies += 1
            self.stats["Kafka replies"] += 1
            if cid == SENTINEL_CID:
                self.stats["Kafka answered to the end"] += 1
                self._end(conn)
                return

    def _end(self, conn: KafkaConn) -> None:
        if conn.ended:
            return
        conn.ended = True
        self.selector.unregister(conn.sock)
        self.conns.pop(conn.sock.fileno(), None)
        conn.sock.close()
        self.ended.append(conn)

    def close(self) -> int:
        """End every connection; the frames they wrote."""
        for conn in list(self.conns.values()):
            self._end(conn)
        self.selector.close()
        return sum(c.frames_written for c in self.ended)


# -- the run --------------------------------------------------------------------------------------

def fuzz(args, native: str, kafka: str, rss: Rss, served: list[tuple[int, int]], stats: Counter, failures: list) -> dict:
    ch = RandomChooser(random.Random(args.seed))
    kafka_frames = int(args.frames * args.kafka_share)
    native_frames = args.frames - kafka_frames
    nf = NativeFuzzer(native, ch, max(1, args.concurrency // 4), stats, failures)
    kf = KafkaFuzzer(kafka, ch, served, args.concurrency, stats, failures)
    sent = {"native": 0, "kafka": 0}
    next_report, next_burst = args.frames // 10, BURST_EVERY
    started = time.monotonic()
    try:
        while sent["native"] < native_frames or sent["kafka"] < kafka_frames:
            now = time.monotonic()
            # both doors at once, each at its share of the way
            if sent["native"] < native_frames and sent["native"] * kafka_frames <= (sent["kafka"] + 1000) * native_frames:
                sent["native"] += nf.step(now)
            else:
                nf.receive(now)
            sent["kafka"] += kf.step(now, kafka_frames - sent["kafka"], timeout=0.001)
            total = sent["native"] + sent["kafka"]
            if total >= next_burst and sent["kafka"] < kafka_frames:
                kf.burst(BURST_SIZE)
                next_burst += BURST_EVERY
            if total >= next_report:
                print(f"  {total:>9,} frames  {time.monotonic() - started:7.1f} s  RSS {rss.read() / 2**20:6.1f} MiB",
                      flush=True)
                next_report += args.frames // 10
            if args.broker is not None and not args.broker.alive():
                failures.append("the broker died during the run")
                break
        deadline = time.monotonic() + REPLY_PATIENCE_S
        while time.monotonic() < deadline:  # the last native replies
            nf.receive(time.monotonic(), timeout_ms=50)
    finally:
        nf.close()
        sent["kafka"] += kf.close()
    return {"native": sent["native"], "kafka": sent["kafka"], "seconds": time.monotonic() - started, "silent": kf.silent}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=32, help="Kafka connections at once (DEALERs: a quarter of it)")
    ap.add_argument("--kafka-share", type=float, default=0.5, help="share of the frames sent to the Kafka door")
    ap.add_argument("--native", help="HOST:PORT of a running broker's native door (else one is started)")
    ap.add_argument("--kafka", help="HOST:PORT of that broker's Kafka door")
    ap.add_argument("--pid", type=int, help="that broker's process id (for its RSS)")
    ap.add_argument("--max-rss-mb", type=float, default=1024.0, help="fail if the broker's RSS passes this")
    ap.add_argument("--broker-log", type=Path, help="keep the started broker's log here")
    args = ap.parse_args()
    if bool(args.native) != bool(args.kafka):
        ap.error("--native and --kafka go together")
    failures: list[str] = []
    stats: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="zbroker-fuzz-") as tmp:
        args.broker = None if args.native else start_broker(Path(tmp))
        native = args.native or args.broker.bootstrap
        kafka = args.kafka or args.broker.kafka_bootstrap
        pid = args.pid if args.native else args.broker.proc.pid
        rss = Rss(pid)
        try:
            kafka_versions = kafka_api_versions(kafka)
            served = served_versions(kafka_versions)
            checker = Checker(native, kafka, NATIVE_VALID)
            checker.run(f"{args.seed}-warmup-{os.getpid()}", kafka_versions)  # creates __consumer_offsets, opens the groups' coordinator
            reference = checker.run(f"{args.seed}-before-{os.getpid()}", kafka_versions)
            before = rss.read()
            rss.start()
            print(f"zbroker fuzz: {args.frames:,} frames, seed {args.seed}, concurrency {args.concurrency}, "
                  f"native {native}, Kafka {kafka}, broker pid {pid}", flush=True)
            run = fuzz(args, native, kafka, rss, served, stats, failures)
            alive = args.broker.alive() if args.broker is not None else True
            if alive:
                try:
                    again = checker.run(f"{args.seed}-after-{os.getpid()}", kafka_versions)
                except (OSError, RuntimeError) as exc:
                    failures.append(f"the check failed: {exc}")
                    again = {}
                same, total = compare(reference, again, failures)
                topics = checker.count_topics()
            else:
                failures.append("the broker is not alive after the run")
                same, total, topics = 0, len(reference), (0, 0)
            rss.stop()
            after = rss.read()
            peak = max(rss.peak, before, after)
        finally:
            if args.broker is not None:
                log_text = args.broker.log_text(tail=None)
                if args.broker_log:
                    args.broker_log.write_text(log_text)
                code = args.broker.stop() if args.broker.alive() else args.broker.proc.returncode
        if args.broker is not None:
            errors = [line for line in log_text.splitlines() if " ERROR " in line or line.startswith("Traceback")]
            if errors:
                failures.append(f"{len(errors)} ERROR lines in the broker's log, the first: {errors[0]}")
            if code != 0:
                failures.append(f"the broker exited with {code} on SIGTERM")
        if peak > args.max_rss_mb * 2**20:
            failures.append(f"the broker's RSS peaked at {peak / 2**20:.1f} MiB, over --max-rss-mb {args.max_rss_mb}")
    mib = 2**20
    frames = run["native"] + run["kafka"]
    print(f"frames sent: {frames:,} (native {run['native']:,}, Kafka {run['kafka']:,}) in {run['seconds']:.1f} s "
          f"({frames / run['seconds']:,.0f} frames/s)")
    print(f"broker RSS: before {before / mib:.1f} MiB, peak {peak / mib:.1f} MiB, after {after / mib:.1f} MiB")
    for name, value in sorted(stats.items()):
        print(f"  {name}: {value:,}")
    for what in run["silent"][:5]:
        print(f"  silent with honest framing (a long poll, a join waiting for its group, or a slow loop): {what}")
    kafka_keys = len({what[1] for what in reference if what[0] == "kafka"})
    native_types = len([what for what in reference if what[0] == "native"])
    print(f"topics on the broker after the run: {topics[0]:,} ({topics[1]:,} partitions)")
    print(f"broker alive: {alive}; checks answered as before the run: {same}/{total} "
          f"({native_types} native types, {kafka_keys} Kafka API keys at their lowest and highest versions)")
    if args.broker is not None:
        print(f"broker log: {len(errors)} ERROR lines; exit code on SIGTERM: {code}")
    for failure in failures[:50]:
        print(f"FAIL: {failure}")
    if len(failures) > 50:
        print(f"FAIL: ... and {len(failures) - 50} more")
    print("PASS" if not failures else f"FAILED ({len(failures)} failures)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
