"""Produce to and consume from strom with nothing but grpcio and the .proto files.

    pip install grpcio grpcio-tools
    python examples/python/strom_client.py --server 127.0.0.1:7400
    # a server with TLS (and, if it verifies clients, this client's certificate):
    python examples/python/strom_client.py --server HOST:7400 --tls-ca ca.pem \
        [--tls-client-cert client.pem --tls-client-key client.key] [--token-file t]

Stubs are generated from proto/ at start-up into a temporary directory, so this file
is all a Python service needs besides the protos.
"""

import argparse

import grpc
from strom_stubs import load_stubs


def open_channel(args):
    """A plaintext channel, or a TLS one when any TLS option (or a token) is given."""
    if not (args.tls_ca or args.tls_client_cert or args.tls_client_key or args.token_file):
        return grpc.insecure_channel(args.server)
    def read(path):
        with open(path, "rb") as f:
            return f.read()
    credentials = grpc.ssl_channel_credentials(
        # None: the system's roots (a certificate a public CA signed).
        root_certificates=read(args.tls_ca) if args.tls_ca else None,
        private_key=read(args.tls_client_key) if args.tls_client_key else None,
        certificate_chain=read(args.tls_client_cert) if args.tls_client_cert else None,
    )
    if args.token_file:
        # Sent as `authorization: Bearer TOKEN` with every call; grpcio sends call
        # credentials only over TLS.
        token = read(args.token_file).decode().strip()
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(args.server, credentials)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="127.0.0.1:7400")
    parser.add_argument("--topic", default="python-demo")
    parser.add_argument("--tls-ca", help="PEM file of the CA that signed the server's certificate")
    parser.add_argument("--tls-client-cert", help="PEM file of this client's certificate")
    parser.add_argument("--tls-client-key", help="PEM file of its private key")
    parser.add_argument("--token-file", help="file holding a token, for a server with auth_tokens (needs TLS)")
    args = parser.parse_args()
    pb, rpc = load_stubs()

    with open_channel(args) as channel:
        admin, log = rpc.AdminStub(channel), rpc.LogStub(channel)
        try:
            admin.CreateTopic(pb.CreateTopicRequest(name=args.topic, partitions=1))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise

        records = [
            pb.Record(key=b"user-1", value=b"signed up", headers=[pb.Header(name="source", value=b"web")]),
            pb.Record(value=b"no key, server timestamp"),
        ]
        ack = log.Produce(pb.ProduceRequest(topic=args.topic, partition=0, records=records,
                                            durability=pb.DURABILITY_FSYNC))
        print(f"produced offsets {ack.base_offset}..{ack.last_offset} to partition {ack.partition}")

        fetched = log.Fetch(pb.FetchRequest(topic=args.topic, partition=0, offset=ack.base_offset))
        for record in fetched.records:
            key = record.key if record.HasField("key") else None
            headers = [(h.name, h.value) for h in record.headers]
            print(f"offset={record.offset} ts={record.timestamp_ms} key={key} value={record.value} headers={headers}")
        print(f"high_watermark={fetched.high_watermark}")

        try:
            log.Fetch(pb.FetchRequest(topic=args.topic, partition=0, offset=fetched.high_watermark + 100))
        except grpc.RpcError as err:
            print(f"fetch past the end: {err.code().name}: {err.details()}")

        # Exactly once: with an id from InitProducer and a sequence per partition, a
        # request sent again (after a timeout, say) is answered with the offsets it got
        # the first time and stored once.
        producer = log.InitProducer(pb.InitProducerRequest(producer_name="python-demo"))
        request = pb.ProduceRequest(topic=args.topic, partition=0, records=[pb.Record(value=b"once")],
                                    producer_id=producer.producer_id, producer_epoch=producer.producer_epoch,
                                    base_sequence=0)
        first, retry = log.Produce(request), log.Produce(request)
        print(f"idempotent produce at {first.base_offset}, its retry answered with {retry.base_offset}")
        request.base_sequence = 5
        try:
            log.Produce(request)
        except grpc.RpcError as err:
            print(f"sequence gap: {err.code().name}: {err.details()}")

        # ProduceStream: requests pipelined on one call, each answered by its correlation
        # id; a failed request is answered with its error and the stream goes on.
        def requests():
            yield pb.ProduceStreamRequest(correlation_id=1, request=pb.ProduceRequest(
                topic=args.topic, partition=0, records=[pb.Record(value=b"streamed")]))
            yield pb.ProduceStreamRequest(correlation_id=2, request=pb.ProduceRequest(
                topic="no-such-topic", records=[pb.Record(value=b"lost")]))
            # 3 MB: more than one HTTP/2 frame.
            big = [pb.Record(value=bytes([i % 251]) * 1000) for i in range(3000)]
            yield pb.ProduceStreamRequest(correlation_id=3, request=pb.ProduceRequest(
                topic=args.topic, partition=0, records=big))
        last_offset = None
        for reply in log.ProduceStream(requests()):
            if reply.HasField("response"):
                print(f"stream {reply.correlation_id}: offsets {reply.response.base_offset}..{reply.response.last_offset}")
                last_offset = reply.response.last_offset
            else:
                print(f"stream {reply.correlation_id}: code {reply.error.code}: {reply.error.message}")
        # The big request's last record (3003 on a new topic).
        last = log.Fetch(pb.FetchRequest(topic=args.topic, partition=0, offset=last_offset, max_bytes=2000))
        print(f"stream record {last_offset}: {last.records[0].value[:3]!r}, {len(last.records[0].value)} bytes")

        # More partitions: the count asked is the total. Asking for the count the topic
        # has already is answered OK, so a retry after a lost answer is safe; fewer is
        # refused (partitions are never removed).
        grown = admin.AddPartitions(pb.AddPartitionsRequest(name=args.topic, partitions=3))
        print(f"partitions now {len(grown.topic.partitions)}, "
              f"partition 2 made at {grown.topic.partitions[2].created_ms} ms")
        try:
            admin.AddPartitions(pb.AddPartitionsRequest(name=args.topic, partitions=2))
        except grpc.RpcError as err:
            print(f"fewer partitions: {err.code().name}")


if __name__ == "__main__":
    main()
