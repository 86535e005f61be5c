"""A queue worker for strom (a share-group member), with nothing but grpcio and the
.proto files.

    pip install grpcio grpcio-tools
    python examples/python/queue_worker.py 127.0.0.1:7400 my-queue my-topic

Start several with the same GROUP: each record of TOPIC goes to one of them at a time.
A record whose value starts with "fail" is released on its first delivery (it comes back,
to this worker or another, with its delivery count up) and accepted on a later one; one
starting with "poison" is rejected (dead-lettered); every other one is accepted. Each
record handled is printed as `partition offset delivery_count value`.

Stubs are generated from proto/ at start-up (strom_stubs.py).
"""

import argparse
import sys
import time

import grpc
from strom_stubs import load_stubs

pb, rpc = load_stubs()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("--idle-exit-ms", type=int, default=0,
                        help="exit after this long without a record (0: never)")
    args = parser.parse_args()
    queues = rpc.QueuesStub(grpc.insecure_channel(args.server))
    member_id = ""  # empty: the server gives us an id in its first answer
    last_record = time.monotonic()
    while True:
        answer = queues.ShareFetch(pb.ShareFetchRequest(
            group=args.group, member_id=member_id, topic=args.topic,
            max_records=100, max_wait_ms=200))
        member_id = answer.member_id
        if not answer.records:
            idle_ms = (time.monotonic() - last_record) * 1000
            if args.idle_exit_ms and idle_ms > args.idle_exit_ms:
                break
            continue
        last_record = time.monotonic()
        acks = {}  # (partition, type) -> offsets
        for shared in answer.records:
            value = shared.record.value.decode()
            if value.startswith("poison"):
                kind = pb.REJECT
            elif value.startswith("fail") and shared.delivery_count == 1:
                kind = pb.RELEASE
            else:
                kind = pb.ACCEPT
            acks.setdefault((shared.partition, kind), []).append(shared.record.offset)
            print(shared.partition, shared.record.offset, shared.delivery_count, value, flush=True)
        refused = queues.ShareAcknowledge(pb.ShareAcknowledgeRequest(
            group=args.group, member_id=member_id, topic=args.topic,
            acks=[pb.Acknowledgement(partition=p, offsets=offsets, type=kind)
                  for (p, kind), offsets in acks.items()])).refused
        for r in refused:
            # Our lock ended before we acknowledged: the record goes to another worker.
            print(f"refused: partition {r.partition} offset {r.offset}: {r.message}", file=sys.stderr)


if __name__ == "__main__":
    main()
