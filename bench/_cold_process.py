"""A fresh gateway process: time from its start to its first completion, and its peak RSS.

Run by bench/gateway_overhead.py while a local stack is up (its environment points the
gateway at moto and the fake upstream). The clock is the process's own start time from
/proc, so interpreter start-up, imports, client construction, the first KMS decrypt and
the first DynamoDB auth read all count.
"""

import json
import os
import sys


def seconds_since_process_start() -> float:
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    from starlette.testclient import TestClient

    import app

    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    r = TestClient(app.app).post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-local-dev"})
    elapsed = seconds_since_process_start()
    assert r.status_code == 200, r.text
    # VmHWM, not ru_maxrss: Linux carries the forking parent's high-water mark into ru_maxrss across exec.
    with open("/proc/self/status") as f:
        rss_mib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    sys.stdout = sys.__stdout__
    print(json.dumps({"seconds": elapsed, "max_rss_mib": rss_mib}))
