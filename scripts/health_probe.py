"""Polls a starting server's gRPC health Check until it says SERVING; prints when it
first answered (NOT_SERVING while strom starts) and when it said SERVING, as seconds
since the epoch, so that the caller can set them against the server's exec.

    python3 scripts/health_probe.py ADDR GO_FILE [LIMIT_S]

It imports grpcio (which takes a while) first, then waits for GO_FILE to exist before
it polls: the caller makes it just before it starts the server. Run by
scripts/restart-many.sh beside each start after SIGKILL. The request and answer are
encoded by hand (HealthCheckRequest{service: ""} is empty; HealthCheckResponse{status}
is field 1), so no generated code is needed.
"""
import os
import sys
import time

import grpc

STATUS = {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}


def main():
    addr, go = sys.argv[1], sys.argv[2]
    limit = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    while not os.path.exists(go):
        time.sleep(0.001)
    t0 = time.time()
    first = None
    while time.time() - t0 < limit:
        channel = grpc.insecure_channel(addr)
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            status = STATUS.get(check(b"", timeout=0.05), "other")
        except grpc.RpcError:
            status = None
        channel.close()
        now = time.time()
        if status is not None and first is None:
            first = (now, status)
        if status == "SERVING":
            print(f"first_answer={first[0]:.3f} first_status={first[1]} serving={now:.3f}")
            return
        time.sleep(0.02)
    print("first_answer=none serving=none")


main()
