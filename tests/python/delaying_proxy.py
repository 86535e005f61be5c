"""A gRPC proxy that forwards every call to UPSTREAM as raw bytes, and holds back the
answer of the first call whose method matches PATTERN for SECONDS: a slow server, or a
slow network, met at one chosen moment of a client's work. Prints "ready PORT" once it
listens on 127.0.0.1:PORT (an ephemeral port), then serves until killed.

Usage: python delaying_proxy.py UPSTREAM PATTERN SECONDS
Needs only grpcio; used by tests/group_handover.rs.
"""

import re
import sys
import threading
import time
from concurrent import futures

import grpc

upstream, pattern, seconds = sys.argv[1], re.compile(sys.argv[2]), float(sys.argv[3])
channel = grpc.insecure_channel(upstream)
delayed = threading.Lock()
remaining = [1]


def hold_back(method):
    if not pattern.search(method):
        return
    with delayed:
        if remaining[0] == 0:
            return
        remaining[0] -= 1
    time.sleep(seconds)


class Forward(grpc.GenericRpcHandler):
    def service(self, details):
        method = details.method

        def unary(request, context):
            try:
                answer = channel.unary_unary(method)(request, timeout=60)
            except grpc.RpcError as err:
                context.abort(err.code(), err.details())
            hold_back(method)
            return answer

        def server_stream(request, context):
            try:
                yield from channel.unary_stream(method)(request)
            except grpc.RpcError as err:
                context.abort(err.code(), err.details())

        # Raw bytes both ways: no deserializers. A method is unary unless it is one of
        # the server-streaming reads.
        if method.endswith("/Subscribe"):
            return grpc.unary_stream_rpc_method_handler(server_stream)
        return grpc.unary_unary_rpc_method_handler(unary)


server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), handlers=[Forward()])
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"ready {port}", flush=True)
server.wait_for_termination()
