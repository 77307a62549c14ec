"""How much ACLs cost on the hot path: a Metadata request for every topic, and one check.

Builds one broker's App in a temporary directory (security on, one broker), puts TOPICS
topics in its metadata image and ACLS ACL bindings (literal, prefixed of several
lengths, some denies, for several principals) in its security image, then times
``ClusterInfo.metadata`` for every topic -- what both front doors' Metadata runs -- with:
security off (AllowAll), the ACL authorizer right after the ACLs changed (no cached
decision: the index is rebuilt and every topic is decided), and again (decisions cached).
Also times one ``authorize`` call, cached and not.

    python scripts/acl_bench.py [--topics 5000] [--acls 300] [--rounds 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

from zbroker.app import App
from zbroker.config import SecurityConfig, single_node_config
from zbroker.context import RequestContext
from zbroker.control.metadata import PartitionMeta, TopicMeta
from zbroker.control.security_meta import AclBinding, acl_record, apply_security_record
from zbroker.security import AllowAll, Operation, topic
from zbroker.security.acl import AclAuthorizer

NOW = 1_000


class NoPeers:
    def send(self, broker_id, message):
        pass

    def call(self, broker_id, message, on_reply, timeout_ms, now_ms):
        pass


def bindings(n: int) -> list[AclBinding]:
    """``n`` bindings of ten principals: a third prefixed (a team's topics, ``teamN-``), a
    few denies of one topic, the rest literal reads, writes and describes of one topic;
    and ``User:all`` may read every topic (a literal ``*``)."""
    out = [AclBinding("User:all", "topic", "*", "literal", "read")]
    for i in range(n - 1):
        principal, team = f"User:u{i % 10}", (i // 10) % 50
        if i % 3 == 0:
            out.append(AclBinding(principal, "topic", f"team{team}-", "prefixed", "read"))
        elif i % 7 == 0:
            out.append(AclBinding(principal, "topic", f"team{team}-t{i}", "literal", "all", "deny"))
        else:
            out.append(AclBinding(principal, "topic", f"team{team}-t{i}", "literal", ("read", "write", "describe")[i % 3]))
    return out


def timed(call, rounds: int) -> float:
    """Median ms of ``rounds`` calls."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def measure(app, ctx: RequestContext, rounds: int) -> str:
    """One line of timings for ``ctx``'s principal."""
    cluster, acl, security = app.cluster, app.authorizer, app.control.image.security

    def metadata():
        return cluster.metadata(ctx, None, False, NOW)

    def changed(call):
        def run():
            security.version += 1  # as a committed ACL change does: the index is rebuilt, nothing is cached
            call()
        return run

    shown = len(metadata().topics)
    cluster.authorizer = AllowAll()
    off = timed(metadata, rounds)
    cluster.authorizer = acl
    cold, warm = timed(changed(metadata), rounds), timed(metadata, rounds)
    resource = topic("team7-t7")
    check = lambda: acl.authorize(ctx, Operation.READ, resource)  # noqa: E731
    check_warm = timed(lambda: [check() for _ in range(10_000)], 5) / 10_000
    check_cold = timed(changed(check), 200)
    return (f"{ctx.principal} (shown {shown} topics): metadata for every topic: security off {off:.2f} ms; "
            f"ACLs right after a change {cold:.2f} ms; ACLs cached {warm:.2f} ms | one check: cached "
            f"{check_warm * 1000:.2f} us, right after a change {check_cold * 1000:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topics", type=int, default=5000)
    parser.add_argument("--acls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(single_node_config(tmp), security=SecurityConfig(kafka_sasl=("SCRAM-SHA-256",)))
        app = App(config, 1, NOW, lambda: NOW, NoPeers())
        try:
            image = app.control.image
            for i in range(args.topics):
                image.add(TopicMeta(f"team{i % 50}-t{i}", [PartitionMeta(0, [1], 1, 0, [1])], topic_id=f"{i:032x}"))
            for b in bindings(args.acls):
                apply_security_record(image.security, acl_record(b))
            assert isinstance(app.authorizer, AclAuthorizer)
            print(f"topics={args.topics} acls={len(image.security.acls)}")
            for who in ("User:u3", "User:all"):
                print(measure(app, RequestContext(who, "kafka"), args.rounds))
        finally:
            app.close(NOW)


if __name__ == "__main__":
    main()
