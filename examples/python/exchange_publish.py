"""Routing with an exchange, with nothing but grpcio and the .proto files.

    pip install grpcio grpcio-tools
    python examples/python/exchange_publish.py 127.0.0.1:7400

Creates two topics and a topic exchange "orders" that routes "eu.*" routing keys to
topic "eu-orders" and everything ("#") to "all-orders", publishes with two routing
keys, and prints where each publish went, then what each topic holds. A routing key
that no binding takes is refused (FAILED_PRECONDITION) and stores nothing.

Stubs are generated from proto/ at start-up (strom_stubs.py).
"""

import argparse

import grpc
from strom_stubs import load_stubs

pb, rpc = load_stubs()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    args = parser.parse_args()
    channel = grpc.insecure_channel(args.server)
    admin, log = rpc.AdminStub(channel), rpc.LogStub(channel)
    exchanges = rpc.ExchangesStub(channel)
    for topic in ["eu-orders", "all-orders"]:
        admin.CreateTopic(pb.CreateTopicRequest(name=topic, partitions=1))
    exchanges.CreateExchange(pb.CreateExchangeRequest(name="orders", type="topic"))
    exchanges.Bind(pb.BindRequest(exchange="orders", topic="eu-orders", key="eu.*"))
    exchanges.Bind(pb.BindRequest(exchange="orders", topic="all-orders", key="#"))

    for routing_key, value in [("eu.created", b"order 1"), ("us.created", b"order 2")]:
        answer = exchanges.Publish(pb.PublishRequest(
            exchange="orders", routing_key=routing_key,
            records=[pb.Record(key=b"customer-7", value=value)]))
        went = ", ".join(f"{t.topic}@{t.base_offset}" for t in answer.topics)
        print(f"published {routing_key}: {went}")

    exchanges.Unbind(pb.UnbindRequest(exchange="orders", topic="all-orders", key="#"))
    try:
        exchanges.Publish(pb.PublishRequest(
            exchange="orders", routing_key="us.created", records=[pb.Record(value=b"lost")]))
        print("published an unroutable record")
    except grpc.RpcError as err:
        print(f"refused: {err.code().name}")

    for topic in ["eu-orders", "all-orders"]:
        fetched = log.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=0))
        print(topic, [r.value.decode() for r in fetched.records])


if __name__ == "__main__":
    main()
