#!/bin/sh
# uvicorn's access log is off: the app's middleware writes one JSON access line per request.
# uvloop and httptools (from the layer): less CPU per request than asyncio's loop and h11.
exec python -m uvicorn --app-dir "$LAMBDA_TASK_ROOT" app:app --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log \
  --loop uvloop --http httptools
