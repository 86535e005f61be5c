"""Idempotent producers under a flood of invented producer ids: a client sends one record
for each of IDS invented ids (any id below those InitProducer has given is taken) on
each of FLOODED partitions of one topic, past the server's max_idempotent_producers.
Meanwhile a real producer on a partition of another topic has written a batch; then a
new real producer writes to that same partition, and the first one's batch is sent again
(a retry after a timeout). Prints the server's anonymous memory grown by the flood, and
whether the retry was recognised (answered with its first offsets) or written twice.
Figures go into BENCHMARKS.md ("Idempotent producers past the cap").

Usage: target/pyenv/bin/python scripts/producer_flood.py [FLOODED IDS] [-- serve flags]
(defaults 8 15000; STROM names the binary, target/release/strom by default). Lower the
cap with a config file: -- --config FILE, holding max_idempotent_producers = N.
"""

import tempfile
import threading

import grpc

from memory_probe import anon_kb, arguments, pb, pbg, serve


def flood(address, flooded, ids, part):
    """One ProduceStream sending a record for every invented id on its partitions."""
    def requests():
        n = 0
        for p in range(part, flooded, 4):
            for i in range(1, ids + 1):
                n += 1
                request = pb.ProduceRequest(
                    topic="flood", partition=p, producer_id=i, producer_epoch=0,
                    base_sequence=0, records=[pb.Record(value=b"")],
                )
                yield pb.ProduceStreamRequest(correlation_id=n, request=request)
    log = pbg.LogStub(grpc.insecure_channel(address))
    for answer in log.ProduceStream(requests()):
        if answer.HasField("error"):
            raise RuntimeError(answer.error)


def main():
    (flooded, ids), extra = arguments(["8", "15000"])
    with tempfile.TemporaryDirectory(prefix="strom-flood-") as data:
        server, address = serve(data, extra)
        try:
            channel = grpc.insecure_channel(address)
            grpc.channel_ready_future(channel).result(timeout=30)
            admin, log = pbg.AdminStub(channel), pbg.LogStub(channel)
            page_cache = {"durability": "page_cache"}
            admin.CreateTopic(pb.CreateTopicRequest(name="flood", partitions=flooded, config=page_cache))
            admin.CreateTopic(pb.CreateTopicRequest(name="real", partitions=1))

            def produce(producer, value):
                request = pb.ProduceRequest(
                    topic="real", partition=0, producer_id=producer.producer_id,
                    producer_epoch=producer.producer_epoch, base_sequence=0,
                    records=[pb.Record(value=value)],
                )
                return log.Produce(request).base_offset

            first = log.InitProducer(pb.InitProducerRequest())
            written_at = produce(first, b"first")
            before = anon_kb(server.pid)
            threads = [threading.Thread(target=flood, args=(address, flooded, ids, k)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            grown = (anon_kb(server.pid) - before) / 1024
            print(f"{flooded * ids} invented producer-partitions: anonymous memory +{grown:.0f} MB")
            second = log.InitProducer(pb.InitProducerRequest())
            produce(second, b"second")
            retried_at = produce(first, b"first")
            if retried_at == written_at:
                print(f"the first producer's retry was recognised (offset {written_at})")
            else:
                print(f"the first producer's retry was written twice (offsets {written_at} and {retried_at})")
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
