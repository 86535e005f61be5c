"""Memory of share groups' windows: GROUPS share groups, each with max.in.flight 100,000
and locks of ten minutes, lock every record they can of a topic of PARTITIONS partitions
of RECORDS records each (one member per group, fetches of 10,000). Prints the records
locked, how much the server's anonymous memory grew meanwhile (RssAnon: the mapped
segments it read are not counted), and what a fetch of one more group then gets.
Figures go into BENCHMARKS.md ("Share groups' windows, capped").

Usage: target/pyenv/bin/python scripts/share_windows.py [GROUPS PARTITIONS RECORDS] [-- serve flags]
(defaults 40 8 100000; STROM names the binary, target/release/strom by default). A
config file with max_share_window_records = N goes after --: -- --config FILE.
"""

import tempfile
import time

import grpc

from memory_probe import anon_kb, arguments, pb, pbg, serve


def main():
    (groups, partitions, records), extra = arguments(["40", "8", "100000"])
    with tempfile.TemporaryDirectory(prefix="strom-windows-") as data:
        server, address = serve(data, extra)
        try:
            channel = grpc.insecure_channel(
                address, options=[("grpc.max_receive_message_length", 64 << 20)]
            )
            grpc.channel_ready_future(channel).result(timeout=30)
            admin, log, queues = pbg.AdminStub(channel), pbg.LogStub(channel), pbg.QueuesStub(channel)
            admin.CreateTopic(pb.CreateTopicRequest(name="t", partitions=partitions))
            for p in range(partitions):
                for _ in range(records // 20000):
                    batch = [pb.Record(value=b"v")] * 20000
                    log.Produce(pb.ProduceRequest(topic="t", partition=p, records=batch))
            before = anon_kb(server.pid)
            started, locked = time.time(), 0
            config = {
                "start": "earliest",
                "max.in.flight": "100000",
                "lock.ms": "600000",
                "session.timeout.ms": "3600000",
            }
            for g in range(groups):
                queues.AlterShareGroupConfig(pb.AlterShareGroupConfigRequest(group=f"g{g}", config=config))
                while True:
                    fetch = pb.ShareFetchRequest(group=f"g{g}", member_id="w", topic="t", max_records=10000)
                    got = len(queues.ShareFetch(fetch).records)
                    locked += got
                    if not got:
                        break
            grown = (anon_kb(server.pid) - before) / 1024
            took = time.time() - started
            print(f"{groups} groups x {partitions} partitions: {locked} records locked in {took:.1f} s, anonymous memory +{grown:.0f} MB")
            queues.AlterShareGroupConfig(pb.AlterShareGroupConfigRequest(group="late", config={"start": "earliest"}))
            late = queues.ShareFetch(pb.ShareFetchRequest(group="late", member_id="w", topic="t", max_records=10))
            print(f"a group made after them got {len(late.records)} of 10")
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
