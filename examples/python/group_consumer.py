"""A consumer-group member for strom, with nothing but grpcio and the .proto files.

    pip install grpcio grpcio-tools
    python examples/python/group_consumer.py 127.0.0.1:7400 my-group my-topic

Start several with the same GROUP: the server shares TOPIC's partitions among them and
moves partitions as members come and go. Each record is printed as one line,
`partition offset value`, and committed after its batch, so a member that takes over a
partition (or a restart of the group) goes on where the last owner stopped.

Stubs are generated from proto/ at start-up (strom_stubs.py).
"""

import argparse
import sys
import time

import grpc
from strom_stubs import load_stubs

FETCH_WAIT_MS = 50  # how long one Fetch waits for records on an idle partition

pb, rpc = load_stubs()


class Fenced(Exception):
    """The server no longer counts us as a member (FAILED_PRECONDITION)."""


def fenced_or_raise(err):
    if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
        raise Fenced(err.details()) from err
    raise err


class GroupMember:
    def __init__(self, channel, group, topic):
        self.groups, self.log = rpc.GroupsStub(channel), rpc.LogStub(channel)
        self.group, self.topic = group, topic
        self.member_id, self.member_epoch = "", 0  # empty id and epoch 0: not joined yet
        self.positions = {}  # partition we own -> next offset to fetch
        self.next_heartbeat = 0.0  # time.monotonic() of the next heartbeat

    def heartbeat(self):
        """Tells the server what we own; learns what we own from now on."""
        owned = [pb.TopicPartitions(topic=self.topic, partitions=sorted(self.positions))]
        try:
            answer = self.groups.Heartbeat(pb.HeartbeatRequest(
                group=self.group, member_id=self.member_id, member_epoch=self.member_epoch,
                topics=[self.topic], owned=owned if self.positions else []))
        except grpc.RpcError as err:
            fenced_or_raise(err)
        self.member_id, self.member_epoch = answer.member_id, answer.member_epoch
        self.next_heartbeat = time.monotonic() + answer.heartbeat_interval_ms / 1000
        assigned = {p for tp in answer.assignment if tp.topic == self.topic for p in tp.partitions}

        # Revoked: partitions we own that the answer no longer lists. Commit them (we
        # commit after every batch anyway, so this stores nothing new here; a consumer
        # committing less often must not skip it), stop consuming them, and heartbeat
        # again at once without them: the next owner gets them only after that.
        revoked = set(self.positions) - assigned
        if revoked:
            self.commit(revoked)
            for p in revoked:
                del self.positions[p]
            self.next_heartbeat = 0.0
            print(f"revoked {sorted(revoked)}", file=sys.stderr)

        # Newly assigned: start from the committed offset, or from the earliest if the
        # group never committed one for the partition.
        new = assigned - set(self.positions)
        if new:
            committed, token = {}, ""
            while True:  # page by page: a group's offsets can pass what one answer holds
                page = self.groups.FetchOffsets(pb.FetchOffsetsRequest(
                    group=self.group, topics=[self.topic], page_size=10_000, page_token=token))
                committed.update({o.partition: o.offset for o in page.offsets if o.topic == self.topic})
                token = page.next_page_token
                if not token:
                    break
            for p in new:
                self.positions[p] = committed[p] if p in committed else self.earliest(p)
            print(f"assigned {sorted(new)} from {[self.positions[p] for p in sorted(new)]}",
                  file=sys.stderr)

    def earliest(self, partition):
        return self.log.ListOffsets(pb.ListOffsetsRequest(
            topic=self.topic, partition=partition, earliest=True)).offset

    def commit(self, partitions):
        """Stores the next offset to consume of each partition, as this member."""
        offsets = [pb.OffsetCommit(topic=self.topic, partition=p, offset=self.positions[p])
                   for p in sorted(partitions)]
        try:
            self.groups.CommitOffsets(pb.CommitOffsetsRequest(
                group=self.group, member_id=self.member_id, member_epoch=self.member_epoch,
                offsets=offsets))
        except grpc.RpcError as err:
            fenced_or_raise(err)

    def poll(self, partition, limit):
        """Fetches one batch of a partition, prints up to `limit` records, commits."""
        response = self.log.Fetch(pb.FetchRequest(
            topic=self.topic, partition=partition, offset=self.positions[partition],
            max_wait_ms=FETCH_WAIT_MS))
        records = response.records[:limit]
        for record in records:
            value = record.value.decode("utf-8", errors="replace")
            print(f"{partition} {record.offset} {value}")
        if not records:
            return 0
        sys.stdout.flush()  # processed: only now is it safe to commit
        self.positions[partition] = records[-1].offset + 1
        self.commit([partition])
        return len(records)

    def drop_everything(self):
        """After being fenced: forget partitions without committing, join as new."""
        self.positions.clear()
        self.member_id, self.member_epoch = "", 0
        self.next_heartbeat = 0.0

    def leave(self):
        if self.member_id:
            self.groups.LeaveGroup(pb.LeaveGroupRequest(group=self.group, member_id=self.member_id))


def main():
    parser = argparse.ArgumentParser(description="Consume TOPIC as a member of GROUP.")
    parser.add_argument("address", help="host:port of the strom server")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("--max-records", type=int, default=0, help="exit after N records (0: no limit)")
    parser.add_argument("--idle-exit-ms", type=int, default=0,
                        help="exit after this long without a record (0: never)")
    args = parser.parse_args()

    with grpc.insecure_channel(args.address) as channel:
        member = GroupMember(channel, args.group, args.topic)
        consumed, last_record = 0, time.monotonic()
        try:
            while True:
                try:
                    if time.monotonic() >= member.next_heartbeat:
                        member.heartbeat()
                    for partition in sorted(member.positions):
                        limit = args.max_records - consumed if args.max_records else None
                        got = member.poll(partition, limit)
                        consumed += got
                        if got:
                            last_record = time.monotonic()
                        if consumed == args.max_records or time.monotonic() >= member.next_heartbeat:
                            break  # done, or heartbeat first: it may revoke partitions
                except Fenced as fenced:
                    print(f"fenced, joining again: {fenced}", file=sys.stderr)
                    member.drop_everything()
                if args.max_records and consumed >= args.max_records:
                    break
                if args.idle_exit_ms and (time.monotonic() - last_record) * 1000 >= args.idle_exit_ms:
                    break
                if not member.positions:  # nothing to fetch: wait a little for partitions
                    time.sleep(min(0.05, max(0.0, member.next_heartbeat - time.monotonic())))
        except KeyboardInterrupt:
            pass
        finally:
            # Everything consumed is committed; leaving hands our partitions over now
            # rather than when our session times out.
            member.leave()
    print(f"consumed {consumed} records", file=sys.stderr)


if __name__ == "__main__":
    main()
