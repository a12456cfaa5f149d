"""The upstream retry policy's numbers, in one block: ``Settings`` defaults and ``RetryPolicy``'s refer here
(the role of openai-python's ``_constants.py``). Imports nothing."""

MAX_ATTEMPTS = 3  # attempts per request, over every deployment of the alias
BACKOFF_BASE_SECONDS = 0.5  # full-jitter exponential backoff: uniform in [0, min(max, base * 2^(n-1))]
BACKOFF_MAX_SECONDS = 8.0
# The longest upstream Retry-After / retry-after-ms the gateway waits out itself (openai-python's
# limit too). A longer one fails the request at once, passing the upstream's Retry-After on.
MAX_RETRY_AFTER_SECONDS = 60.0
RETRY_BUDGET_RATIO = 0.2  # retries allowed per request, container-wide (token bucket)
RETRY_BUDGET_MIN_PER_SECOND = 2.0  # and this many per second whatever the traffic
MIN_ATTEMPT_SECONDS = 0.25  # never start an attempt with less time than this left

# Async jobs retry more patiently than a request someone waits on: more attempts inside one worker
# invocation (within the job's own deadline, the same backoff, Retry-After and budget as above) ...
JOB_MAX_ATTEMPTS = 6
# ... and when those run out, the message is redriven after a short growing delay, not after the
# queue's visibility timeout: ChangeMessageVisibility to a full-jitter exponential delay on the
# message's receive count, uniform in [0, min(max, base * 2^(receives-1))] seconds.
JOB_REDRIVE_BASE_SECONDS = 5.0
JOB_REDRIVE_MAX_SECONDS = 240.0
# While a job runs, the worker reads its status this often: a cancel stops it within this.
JOB_CANCEL_POLL_SECONDS = 2.0
