"""Where a cold start's time goes, in one fresh process: ``import app``, building its services, and
its first completion (the lifespan with its warm-up, then the request). Prints a JSON list of the
three durations in seconds. Run by bench/request_path.py against the local stack's environment."""

import json
import sys
import time

if __name__ == "__main__":
    started = time.perf_counter()
    import app

    imported = time.perf_counter()
    app.default_services()
    built = time.perf_counter()
    from starlette.testclient import TestClient

    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(app.app) as client:
        r = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-local-dev"})
    done = time.perf_counter()
    assert r.status_code == 200, r.text
    sys.stdout = sys.__stdout__
    print(json.dumps([imported - started, built - imported, done - built]))
