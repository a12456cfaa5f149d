"""Per-tenant and per-key limits, budgets and usage, enforced by atomic reservations.

* :mod:`.limits` — the ``Limits`` model and where it is stored;
* :mod:`.counters` — counter items on DynamoDB conditional writes (one item per scope per window);
* :mod:`.service` — reserve before the upstream call, reconcile after it;
* :mod:`.usage` — the usage report read from the same counters.
"""
