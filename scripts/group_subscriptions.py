"""Consumer groups whose members subscribe with long lists: MEMBERS members join one
group, each naming the same 1,000 topics of 200 bytes (topics that need not exist), and
a group beside it takes members with different lists until the server refuses one.
Prints the server's anonymous memory grown by the joins, and how DescribeGroup answers
the first group through grpcio: the pages and their largest, or the error a whole answer
past grpcio's 4 MB meets. Figures go into BENCHMARKS.md ("Subscriptions kept once").

Usage: MIMALLOC_PURGE_DELAY=0 target/pyenv/bin/python scripts/group_subscriptions.py
[MEMBERS] [-- serve flags] (default 1000; STROM names the binary, target/release/strom
by default). MIMALLOC_PURGE_DELAY=0 makes the server hand freed memory back at once, so
that what it holds is what it keeps.
"""

import tempfile

import grpc

from memory_probe import anon_kb, arguments, pb, pbg, serve

def names(seed):
    """1,000 topic names of 200 bytes (the longest a name may be is 249)."""
    return [f"{seed:04}-{i:04}-" + "x" * 190 for i in range(1000)]


def join(groups, group, topics):
    request = pb.HeartbeatRequest(group=group, topics=topics, session_timeout_ms=600_000)
    return groups.Heartbeat(request).member_id


def describe(groups):
    """Every page of group "g": their count and the largest's size, or the error."""
    pages, largest, token = 0, 0, ""
    while True:
        try:
            page = groups.DescribeGroup(pb.DescribeGroupRequest(group="g", page_token=token))
        except grpc.RpcError as err:
            return f"page {pages + 1} refused: {err.code().name}: {err.details()[:80]}"
        pages += 1
        largest = max(largest, page.ByteSize())
        token = getattr(page, "next_page_token", "")
        if not token:
            return f"{pages} pages, the largest {largest / 1e6:.2f} MB"


def main():
    (members,), extra = arguments(["1000"])
    with tempfile.TemporaryDirectory(prefix="strom-subscriptions-") as data:
        server, address = serve(data, extra)
        try:
            channel = grpc.insecure_channel(address)
            grpc.channel_ready_future(channel).result(timeout=30)
            groups = pbg.GroupsStub(channel)
            before = anon_kb(server.pid)
            for _ in range(members):
                join(groups, "g", names(0))
            grown = (anon_kb(server.pid) - before) / 1024
            print(f"{members} members naming the same 1,000 topics: anonymous memory +{grown:.0f} MB "
                  f"({grown * 1024 / members:.1f} KB a member)")
            print(f"DescribeGroup: {describe(groups)}")
            different = 0
            for seed in range(members):
                try:
                    join(groups, "different", names(seed))
                    different += 1
                except grpc.RpcError as err:
                    print(f"a group of different lists took {different}, then: {err.code().name}")
                    break
            else:
                print(f"a group of different lists took all {different}")
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
