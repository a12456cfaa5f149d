#!/bin/sh
exec python -m uvicorn --app-dir "$LAMBDA_TASK_ROOT" app:app --host 127.0.0.1 --port "${PORT:-8080}"
