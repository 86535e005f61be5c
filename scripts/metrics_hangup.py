"""Clients that ask for /metrics and hang up before the answer: THREADS threads, each
connecting, sending GET, waiting 20 ms and closing, for SECONDS (a render that outlives
its requester must not leave room for another beside it: scripts/metrics-attack.sh).
  metrics_hangup.py PORT SECONDS THREADS"""
import socket
import sys
import threading
import time

port, seconds, threads = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
end = time.time() + seconds
sent = [0]


def client():
    while time.time() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: strom\r\n\r\n")
            time.sleep(0.02)
            s.close()
            sent[0] += 1
        except OSError:
            time.sleep(0.01)


workers = [threading.Thread(target=client) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print("requests", sent[0])
