"""What scripts/share_windows.py and scripts/producer_flood.py share: strom's Python
stubs, a fresh `strom serve` on a temporary directory, its anonymous memory, and the
command line (numbers, then `--` and flags for the server)."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "python"))
from strom_stubs import load_stubs  # noqa: E402

pb, pbg = load_stubs()
STROM = os.environ.get("STROM", "target/release/strom")


def anon_kb(pid):
    """The process's anonymous resident memory (RssAnon): mapped files left out."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon")


def arguments(defaults):
    """The numbers before `--` (or `defaults`), and the server's flags after it."""
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        extra = args[args.index("--") + 1:]
        args = args[: args.index("--")]
    return [int(a) for a in (args or defaults)], extra


def serve(data, extra):
    """`strom serve` on `data` with `extra` flags; returns the process and its address."""
    address = f"127.0.0.1:{7900 + os.getpid() % 1000}"
    server = subprocess.Popen(
        [STROM, "serve", "--listen", address, "--data-dir", data, *extra],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(data, "server.log"), "w"),
    )
    return server, address
