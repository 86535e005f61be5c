#!/usr/bin/env python3
"""Would durable appends gain from a segment whose blocks were written (with zeros) and
synced ahead of them? An fdatasync after overwriting written blocks skips the journal
commit that one after filling reserved (unwritten) blocks needs (BENCHMARKS.md, "What a
durable append's fdatasync costs"). This measures it with the zeros written by a
background thread while the appends run, as a log would have to.

    python3 scripts/prewrite.py plain|zero APPENDS THINK_S [AHEAD_MIB]   # e.g. zero 1000 0.0008

Each append is 1 MiB in four writes, each but the last followed by a writeback request
(sync_file_range), then fdatasync, as strom writes a durable batch; THINK_S of sleep
before each stands for the network round trip of one request in flight. `plain`
reserves blocks 4 MiB ahead (fallocate KEEP_SIZE) as strom does. `zero` keeps AHEAD_MIB
(default 16) written with zeros and synced ahead of the appends, ZCH MiB (default 4) a
sync, through the page cache or, with ZDIRECT=1, with O_DIRECT. Prints MB/s, the p50/p99
of one append plus its fdatasync, and how many appends landed on zeroed blocks. Run a
2 GB dd before each run and alternate the modes."""
import ctypes, mmap, os, sys, threading, time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_long, ctypes.c_uint]
KEEP_SIZE = 1; SFR_WRITE = 2
mode, n, think = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ahead = (int(sys.argv[4]) if len(sys.argv) > 4 else 16) << 20
zero_chunks = int(os.environ.get("ZCH", "4"))
path = "/var/tmp/prewrite.dat"
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
zfd = os.open(path, os.O_RDWR | os.O_DIRECT) if os.environ.get("ZDIRECT") else fd
buf = os.urandom(1 << 20)
zeros = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs
pos = 0; reserved = 0; zeroed = 0; stop = False; on_zeros = 0
lock = threading.Lock()  # appends and zero writes never overlap

def zeroer():
    global zeroed
    while not stop:
        with lock:
            start = max(zeroed, pos)
        if start >= pos + ahead:
            time.sleep(0.0005)
            continue
        for _ in range(zero_chunks):
            with lock:
                at = max(start, pos)
                os.pwrite(zfd, zeros, at)
                start = at + len(zeros)
        os.fdatasync(zfd)
        with lock:
            zeroed = max(zeroed, start)

if mode == "zero":
    t = threading.Thread(target=zeroer); t.start()
    time.sleep(0.2)
lat = []
t0 = time.perf_counter()
for i in range(n):
    if mode == "plain" and pos + len(buf) > reserved:
        libc.fallocate(fd, KEEP_SIZE, pos, 4 << 20); reserved = pos + (4 << 20)
    time.sleep(think)
    s = time.perf_counter()
    step = len(buf) // 4
    with lock:
        if pos + len(buf) <= zeroed:
            on_zeros += 1
        for c in range(4):
            os.pwrite(fd, memoryview(buf)[c * step:(c + 1) * step], pos + c * step)
            if c < 3:
                libc.sync_file_range(fd, pos + c * step, step, SFR_WRITE)
        pos += len(buf)
    os.fdatasync(fd)
    lat.append(time.perf_counter() - s)
el = time.perf_counter() - t0
stop = True
if mode == "zero":
    t.join()
os.close(fd); os.unlink(path)
lat.sort()
print(f"{mode} think={think} MB/s={n * len(buf) / el / 1e6:.0f} p50={lat[len(lat) // 2] * 1e3:.2f}ms "
      f"p99={lat[int(len(lat) * .99)] * 1e3:.2f}ms on_zeros={on_zeros}/{n}")
