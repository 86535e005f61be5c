#!/usr/bin/env python3
"""What an fdatasync'd 1 MiB append costs on this disk, with and without starting the
writeback of each part as it is written (sync_file_range, SYNC_FILE_RANGE_WRITE).

    python3 scripts/sfr.py plain|sfr APPENDS CHUNKS     # e.g. sfr 1000 4

Blocks are reserved 4 MiB ahead (fallocate, KEEP_SIZE), as strom's active segment does.
Prints MB/s and the p50/p99 of one append plus its fdatasync. Run a 2 GB dd before each
run and alternate the modes (the page cache's state moves the figures more)."""
import os, sys, time, ctypes, statistics
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_long, ctypes.c_uint]
KEEP_SIZE = 1; SFR_WRITE = 2
mode, n, chunks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = "/var/tmp/sfr.dat"
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
buf = os.urandom(1 << 20)
pos = 0; reserved = 0; lat = []
t0 = time.perf_counter()
for i in range(n):
    if pos + len(buf) > reserved:
        libc.fallocate(fd, KEEP_SIZE, pos, 4 << 20); reserved = pos + (4 << 20)
    s = time.perf_counter()
    step = len(buf) // chunks
    for c in range(chunks):
        os.pwrite(fd, memoryview(buf)[c*step:(c+1)*step], pos + c*step)
        if mode == "sfr":
            libc.sync_file_range(fd, pos + c*step, step, SFR_WRITE)
    os.fdatasync(fd)
    lat.append(time.perf_counter() - s)
    pos += len(buf)
el = time.perf_counter() - t0
os.close(fd); os.unlink(path)
lat.sort()
print(f"{mode} chunks={chunks} MB/s={n*len(buf)/el/1e6:.0f} p50={lat[len(lat)//2]*1e3:.2f}ms p99={lat[int(len(lat)*.99)]*1e3:.2f}ms")
