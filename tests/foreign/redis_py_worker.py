"""A redis-py Lock worker for rdlock's shared-key integration case (tests/src/cases.rs).

Loops for DURATION seconds on one key: wait for the lock with redis-py's own Lock (default
poll period, sleep=0.1), check that nobody else is inside, increment a counter with a read,
a pause and a write (not atomic: an overlap loses increments), release, think a while.
Prints one JSON line: holds, longest wait (ms), overlaps seen, waits that timed out.

usage: redis_py_worker.py PORT KEY COUNTER INSIDE DURATION_S SEED
"""

import json
import random
import sys
import time

import redis

port, key, counter, inside, duration, seed = sys.argv[1:7]
rng = random.Random(int(seed))
r = redis.Redis(host="127.0.0.1", port=int(port))
lock = r.lock(key, timeout=5, blocking_timeout=10)  # sleep=0.1: redis-py's default
holds = overlaps = timeouts = 0
longest = 0.0
stop = time.monotonic() + float(duration)
while time.monotonic() < stop:
    asked = time.monotonic()
    if not lock.acquire():
        timeouts += 1
        continue
    longest = max(longest, time.monotonic() - asked)
    if r.incr(inside) != 1:
        overlaps += 1
    seen = int(r.get(counter) or 0)
    time.sleep(rng.uniform(0.002, 0.008))
    r.set(counter, seen + 1)
    r.decr(inside)
    lock.release()
    holds += 1
    time.sleep(rng.uniform(0.010, 0.100))
print(json.dumps({"holds": holds, "longest_ms": longest * 1000, "overlaps": overlaps, "timeouts": timeouts}))
