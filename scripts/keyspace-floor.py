"""The server's own cost per hand-off-shaped call against the number of locks (issue #19).

N locks' keys as rdlock lays them out (the lock key with a TTL, its fence counter, its queue)
and N channels subscribed on one connection; then a script doing a hand-off's commands (GET,
RPUSH, LPOP, INCR, SET PX, PUBLISH) on locks picked at random, pipelined, and the server's CPU
per call (`INFO cpu`). No rdlock code runs: what grows here grows with the keyspace alone.

    ~/.cache/rdlock/tools/py-redis-*/bin/python scripts/keyspace-floor.py 100000,300000

The server is `redis-server` on PATH, or RDLOCK_REDIS_SERVER.
"""
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def cpu(r):
    i = r.info("cpu"); return i["used_cpu_user"] + i["used_cpu_sys"]

SCRIPT = """
local v = redis.call('GET', KEYS[1])
redis.call('RPUSH', KEYS[2], 'x')
redis.call('LPOP', KEYS[2])
local f = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], 'tok', 'PX', 600000)
redis.call('PUBLISH', KEYS[4], f)
return f
"""

def run(n, ops=200_000, server=os.environ.get("RDLOCK_REDIS_SERVER", "redis-server")):
    port = free_port(); d = tempfile.mkdtemp()
    p = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try: r.ping(); break
            except Exception: time.sleep(0.05)
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            k = f"bench:wait:{i}"
            pipe.set(k, "holder", px=600000)
            pipe.set(k + "#rdl:fence", i)
            pipe.rpush(k + "#rdl:q", "w")
            if i % 5000 == 4999: pipe.execute()
        pipe.execute()
        sub = redis.Redis(port=port).pubsub()
        chans = [f"bench:wait:{i}#rdl:i0" for i in range(n)]
        for j in range(0, n, 5000):
            sub.subscribe(*chans[j:j + 5000])
        time.sleep(1)
        sha = r.script_load(SCRIPT)
        rnd = random.Random(1)
        best = None
        for rep in range(3):
            c0 = cpu(r); t0 = time.time()
            pipe = r.pipeline(transaction=False)
            for j in range(ops):
                i = rnd.randrange(n); k = f"bench:wait:{i}"
                pipe.evalsha(sha, 4, k, k + "#rdl:q", k + "#rdl:fence", chans[i])
                if j % 1000 == 999: pipe.execute()
                # drain messages now and then
                if j % 20000 == 19999:
                    while sub.get_message(timeout=0): pass
            pipe.execute()
            c1 = cpu(r)
            us = (c1 - c0) * 1e6 / ops
            best = us if best is None else min(best, us)
            print(f"N={n} rep={rep} server CPU per call {us:.2f} us (wall {time.time()-t0:.1f} s)", flush=True)
        sub.close()
        return best
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)

if __name__ == "__main__":
    for n in [int(x) for x in sys.argv[1].split(",")]:
        print(f"N={n}: best {run(n):.2f} us", flush=True)
