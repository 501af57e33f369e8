#!/usr/bin/env python3
"""A Python group member that writes the ownership-audit lines of assignor/examples/worker.rs
(read by integration/src/audit.rs), with kafka-python or confluent-kafka (librdkafka).

    python_peer.py --client kafka-python|confluent --bootstrap HOST:PORT --group G --topic T
                   --name NAME --audit PATH [--assignor NAME] [--session-timeout-ms N]
                   [--instance-id ID] [--delay-ms N] [--commit-interval-ms N]

Run it with the venv that integration/peers/build makes (pinned versions). Classic group
protocol, `--assignor` cooperative-sticky by default (kafka-python: range, roundrobin, sticky,
cooperative-sticky; confluent: range, roundrobin, cooperative-sticky), auto-commit off: the
offsets of the records processed are committed every --commit-interval-ms (default 1000) and,
synchronously, for the partitions revoked. Audit lines are flushed after every batch and in every
rebalance callback, before any commit; `started` / `stopping` lines mark when it subscribed and
when it began a clean shutdown. `role` lines (generation, leader) only with kafka-python:
librdkafka tells the application neither. SIGTERM / SIGINT: finish the batch, close the consumer
(revoke with commit, LeaveGroup unless static) and exit 0.
"""

import argparse
import json
import signal
import sys
import threading
import time

POLL_S = 0.2


def log(member, msg):
    print(f"[{member}] {msg}", file=sys.stderr, flush=True)


class Audit:
    """The audit file: one JSON object a line, `ts_ms` from the wall clock."""

    def __init__(self, path, member):
        self.out = open(path, "w", encoding="utf-8")
        self.member = member
        self.lock = threading.Lock()
        # Next offset to commit per (topic, partition): one past the last record processed.
        self.processed = {}

    def line(self, event, **fields):
        entry = {"ts_ms": time.time_ns() // 1_000_000, "member": self.member, "event": event}
        entry.update(fields)
        with self.lock:
            self.out.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def flush(self):
        with self.lock:
            self.out.flush()

    def event(self, event):
        """`started` (the audit counts the member live from here) or `stopping`."""
        self.line(event)
        self.flush()

    def consumed(self, topic, partition, offset):
        self.line("consumed", topic=topic, partition=partition, offset=offset)
        self.processed[(topic, partition)] = offset + 1

    def ownership(self, event, tps):
        """Record an ownership change; `tps` are (topic, partition) pairs."""
        tps = sorted(tps)
        self.line(event, partitions=[[t, p] for t, p in tps])
        self.flush()
        log(self.member, f"{event} {tps}")

    def to_commit(self, tps, forget=False):
        """The processed offsets of `tps` as {(topic, partition): offset}."""
        out = {tp: self.processed[tp] for tp in tps if tp in self.processed}
        if forget:
            for tp in tps:
                self.processed.pop(tp, None)
        return out


def consume(args, audit, stopping, consumer, batch, commit_sync, after_batch=lambda: None):
    """The poll loop of both clients, from `started` to a closed consumer. `batch()` polls once
    and yields (topic, partition, offset) per record; each record costs --delay-ms before it
    counts as consumed. After every batch the audit is flushed and `after_batch()` runs; every
    --commit-interval-ms the owned partitions' processed offsets go to `commit_sync`."""
    audit.event("started")
    total, next_commit = 0, time.monotonic() + args.commit_interval_ms / 1000
    while not stopping.is_set():
        for topic, partition, offset in batch():
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000)
            audit.consumed(topic, partition, offset)
            total += 1
        audit.flush()
        after_batch()
        if time.monotonic() >= next_commit:
            next_commit = time.monotonic() + args.commit_interval_ms / 1000
            owned = [(tp.topic, tp.partition) for tp in consumer.assignment()]
            commit_sync(audit.to_commit(owned))
    log(args.name, f"closing after {total} records")
    audit.event("stopping")
    consumer.close()


def run_kafka_python(args, audit, stopping):
    from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
    from kafka.errors import KafkaError
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    bases = {
        "cooperative-sticky": CooperativeStickyAssignor,
        "sticky": StickyPartitionAssignor,
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
    }
    role = {"assigned": False, "leader": False, "generation": -1}

    class LeaderNoting(bases[args.assignor]):
        """Notes the generation of each assignment received and whether this member computed it
        (only the leader does), for the `role` lines."""

        def assign(self, cluster, members):
            role["assigned"] = True
            return super().assign(cluster, members)

        def on_assignment(self, assignment, generation):
            role.update(leader=role["assigned"], assigned=False, generation=generation)
            return super().on_assignment(assignment, generation)

    config = dict(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=args.name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        partition_assignment_strategy=[LeaderNoting],
    )
    if args.session_timeout_ms:
        config["session_timeout_ms"] = args.session_timeout_ms
        config["heartbeat_interval_ms"] = max(100, args.session_timeout_ms // 3)
    if args.instance_id:
        config["group_instance_id"] = args.instance_id
    consumer = KafkaConsumer(**config)

    def commit_sync(offsets):
        if offsets:
            try:
                consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                 for (t, p), o in offsets.items()})
            except KafkaError as e:
                log(args.name, f"commit failed: {e!r}")

    # The callbacks run on kafka-python's IO thread, where a blocking commit() is refused:
    # the async listener awaits the commit there instead (the poll loop waits for it).
    class Listener(AsyncConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):
            tps = [(tp.topic, tp.partition) for tp in revoked]
            audit.ownership("revoked", tps)
            offsets = audit.to_commit(tps, forget=True)
            if offsets:
                try:
                    await consumer.commit_async({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                                 for (t, p), o in offsets.items()})
                except KafkaError as e:
                    log(args.name, f"commit on revoke failed: {e!r}")

        async def on_partitions_assigned(self, assigned):
            audit.ownership("assigned", [(tp.topic, tp.partition) for tp in assigned])

        async def on_partitions_lost(self, lost):
            tps = [(tp.topic, tp.partition) for tp in lost]
            audit.ownership("lost", tps)
            audit.to_commit(tps, forget=True)

    consumer.subscribe([args.topic], listener=Listener())

    def batch():
        for records in consumer.poll(timeout_ms=int(POLL_S * 1000)).values():
            for r in records:
                yield r.topic, r.partition, r.offset

    last_role = (False, -1)

    def note_role():
        nonlocal last_role
        now_role = (role["leader"], role["generation"])
        if now_role != last_role:
            last_role = now_role
            audit.line("role", leader=now_role[0], generation=now_role[1])
            audit.flush()

    consume(args, audit, stopping, consumer, batch, commit_sync, after_batch=note_role)


def run_confluent(args, audit, stopping):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "group.protocol": "classic",
        "client.id": args.name,
        "partition.assignment.strategy": args.assignor,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if args.session_timeout_ms:
        config["session.timeout.ms"] = args.session_timeout_ms
        config["heartbeat.interval.ms"] = max(100, args.session_timeout_ms // 3)
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    consumer = Consumer(config)

    def commit_sync(offsets):
        if offsets:
            try:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                asynchronous=False)
            except KafkaException as e:
                log(args.name, f"commit failed: {e!r}")

    # Called from poll() and close() on this thread; the client (un)assigns after each.
    def on_assign(_, partitions):
        audit.ownership("assigned", [(tp.topic, tp.partition) for tp in partitions])

    def on_revoke(_, partitions):
        tps = [(tp.topic, tp.partition) for tp in partitions]
        audit.ownership("revoked", tps)
        commit_sync(audit.to_commit(tps, forget=True))

    def on_lost(_, partitions):
        tps = [(tp.topic, tp.partition) for tp in partitions]
        audit.ownership("lost", tps)
        audit.to_commit(tps, forget=True)

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)

    def batch():
        for m in consumer.consume(num_messages=500, timeout=POLL_S):
            if m.error():
                log(args.name, f"consume: {m.error()}")
                continue
            yield m.topic(), m.partition(), m.offset()

    consume(args, audit, stopping, consumer, batch, commit_sync)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--client", required=True, choices=["kafka-python", "confluent"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--audit", required=True)
    p.add_argument("--assignor", default="cooperative-sticky")
    p.add_argument("--session-timeout-ms", type=int)
    p.add_argument("--instance-id")
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--commit-interval-ms", type=int, default=1000)
    args = p.parse_args()

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    audit = Audit(args.audit, args.name)
    try:
        run = run_kafka_python if args.client == "kafka-python" else run_confluent
        run(args, audit, stopping)
    finally:
        audit.flush()


if __name__ == "__main__":
    main()
