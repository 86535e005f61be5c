"""A burst of binding changes against a server near its binding limit: B bindings with
255-byte keys to topics of 200-character names (so exchanges.json is several MB), then
N concurrent Unbinds over 10 channels while an fsync Produce to another topic is timed
again and again. Prints how long the burst took, the worst fsync produce meanwhile,
and the server's peak threads and memory.
  exchange_changes.py STROM_BINARY [B] [N]    (defaults 9500 and 1000)"""
import os, re, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "python"))
import grpc
from strom_stubs import load_stubs
pb, rpc = load_stubs()

binary = sys.argv[1]
bindings = int(sys.argv[2]) if len(sys.argv) > 2 else 9500
burst = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
work = tempfile.mkdtemp(prefix="strom-exchange-changes.")
server = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", f"{work}/d"],
                          stderr=subprocess.PIPE, text=True)
try:
    for line in server.stderr:
        found = re.search(r"serving gRPC on ([0-9.]+:[0-9]+)", line)
        if found:
            addr = found.group(1)
            break
    status = lambda name: open(f"/proc/{server.pid}/status").read().split(name + ":")[1].split()[0]
    channel = grpc.insecure_channel(addr)
    admin, log, exchanges = rpc.AdminStub(channel), rpc.LogStub(channel), rpc.ExchangesStub(channel)
    per_exchange = 1000
    names = [f"x{i}" for i in range((bindings + per_exchange - 1) // per_exchange)]
    topics = [("t" * 190) + f"{i:010d}" for i in range(10)]
    for topic in topics + ["probe"]:
        admin.CreateTopic(pb.CreateTopicRequest(name=topic, partitions=1), timeout=30)
    for name in names:
        exchanges.CreateExchange(pb.CreateExchangeRequest(name=name, type="direct"), timeout=30)
    todo = [(names[i // per_exchange], topics[i % 10], f"{i:08d}" + "k" * 247) for i in range(bindings)]
    bind = lambda b: exchanges.Bind(pb.BindRequest(exchange=b[0], topic=b[1], key=b[2]), timeout=600)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(bind, todo))
    size = os.path.getsize(f"{work}/d/exchanges.json")

    def probe():
        started = time.time()
        log.Produce(pb.ProduceRequest(topic="probe", records=[pb.Record(value=b"x")], durability=2), timeout=120)
        return time.time() - started

    baseline = probe()
    stubs = [rpc.ExchangesStub(grpc.insecure_channel(addr)) for _ in range(10)]
    started = time.time()
    calls = [stubs[i % 10].Unbind.future(pb.UnbindRequest(exchange=e, topic=t, key=k), timeout=600)
             for i, (e, t, k) in enumerate(todo[:burst])]
    worst, threads = probe(), 0
    while not all(c.done() for c in calls):
        worst = max(worst, probe())
        threads = max(threads, int(status("Threads")))
    took = time.time() - started
    failed = sum(1 for c in calls if c.exception() is not None)
    print(f"{bindings} bindings, exchanges.json {size / 1e6:.1f} MB; {burst} unbinds in {took:.2f} s "
          f"({failed} failed); fsync produce {baseline * 1000:.1f} ms before, worst {worst * 1000:.1f} ms "
          f"during; threads peak {threads}; peak RSS {int(status('VmHWM')) // 1024} MB")
finally:
    server.kill()
    server.wait()
    subprocess.run(["rm", "-rf", work])
