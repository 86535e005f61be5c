"""Fills a server for a scrape-cost measurement (scripts/metrics-scrape.sh): T topics of P
partitions with three records each, and G consumer groups each committing offset 1 of
every partition of every topic.
  metrics_load.py ADDRESS T P G"""
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "python"))
import grpc
from strom_stubs import load_stubs
pb, rpc = load_stubs()
addr, topics, parts, groups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ch = grpc.insecure_channel(addr)
admin, log, grp = rpc.AdminStub(ch), rpc.LogStub(ch), rpc.GroupsStub(ch)
for t in range(topics):
    admin.CreateTopic(pb.CreateTopicRequest(name=f"t{t}", partitions=parts))
    for p in range(parts):
        log.Produce(pb.ProduceRequest(topic=f"t{t}", partition=p, records=[pb.Record(value=b"x")] * 3))
for g in range(groups):
    offsets = [pb.OffsetCommit(topic=f"t{t}", partition=p, offset=1) for t in range(topics) for p in range(parts)]
    grp.CommitOffsets(pb.CommitOffsetsRequest(group=f"g{g}", offsets=offsets))
print("loaded")
