"""Polls a starting server's metrics endpoint until it shows the ready server's
figures; prints when it first answered a scrape (while strom starts: `strom_starting
1`) and when the figures came (a partition's high watermark), as seconds since the
epoch, so that the caller can set them against the server's exec.

    python3 scripts/metrics_probe.py ADDR GO_FILE [LIMIT_S]

It waits for GO_FILE to exist before it polls: the caller makes it just before it
starts the server. Run by scripts/restart-many.sh beside each start after SIGKILL, with
scripts/health_probe.py. Each scrape is a new connection with a 50 ms timeout, as a
scraper whose earlier attempt timed out would make.
"""
import os
import sys
import time
import urllib.request


def main():
    addr, go = sys.argv[1], sys.argv[2]
    limit = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    while not os.path.exists(go):
        time.sleep(0.001)
    t0 = time.time()
    first = None
    while time.time() - t0 < limit:
        try:
            url = f"http://{addr}/metrics"
            text = urllib.request.urlopen(url, timeout=0.05).read().decode()
        except Exception:
            text = None
        now = time.time()
        if text is not None and first is None:
            first = now
        if text is not None and "strom_partition_high_watermark{" in text:
            print(f"first_answer={first:.3f} figures={now:.3f}")
            return
        time.sleep(0.02)
    print("first_answer=none figures=none")


main()
