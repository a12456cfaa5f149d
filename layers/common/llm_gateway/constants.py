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
