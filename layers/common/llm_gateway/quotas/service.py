"""Reserve before the upstream call, settle after it.

:meth:`QuotaService.admit` turns a request's estimate (our own prompt-token count plus its output
allowance, at the alias's dearest deployment's price) into one reservation across the tenant's
and the key's counters (see :mod:`.counters`) and returns a :class:`Hold`. :meth:`Hold.settle`
adds the difference between the estimate and the real usage, and frees the concurrency slot; a
failed call settles with what it used (nothing, for an upstream error; what was generated, for a
cut or cancelled stream). A hold that enforces nothing (an unlimited tenant and key) hands its
settlement to the usage writer (:mod:`.writer`), off the reply's path. Windows are fixed UTC
minutes, days and months.
"""

from __future__ import annotations

import calendar
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from llm_gateway.errors import ModelNotAllowed, QuotaExhausted, RateLimited
from llm_gateway.quotas.counters import NANO, Cap, Counter, CounterStore, Denied, SlotClaim
from llm_gateway.quotas.limits import Limits, LimitsStore
from llm_gateway.quotas.writer import UsageWriter
from llm_gateway.upstream.aliases import ModelAlias

MINUTE_TTL = 3_600  # minute counters are kept an hour (only the current one is ever read)
USAGE_TTL = 400 * 86_400  # day and month counters feed /v1/usage for ~13 months
BUDGET_LIMITS = frozenset({"usd_per_day", "usd_per_month", "tokens_per_day"})
SLOTS_SK = "SLOTS"


def tenant_pk(tenant: str) -> str:
    return f"T#{tenant}#Q"


def key_pk(tenant: str, key_id: str) -> str:
    return f"T#{tenant}#Q#K#{key_id}"


def nano(usd: float) -> int:
    return round(usd * NANO)


@dataclass(frozen=True)
class Windows:
    """The windows an instant falls in, and when each ends (epoch seconds)."""

    minute: str
    day: str
    month: str
    minute_end: int
    day_end: int
    month_end: int

    @classmethod
    def at(cls, now: float) -> Windows:
        t = time.gmtime(now)
        day_start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        next_month = (t.tm_year + t.tm_mon // 12, t.tm_mon % 12 + 1, 1, 0, 0, 0)
        return cls(
            minute=time.strftime("%Y%m%d%H%M", t),
            day=time.strftime("%Y%m%d", t),
            month=time.strftime("%Y%m", t),
            minute_end=(int(now) // 60 + 1) * 60,
            day_end=day_start + 86_400,
            month_end=calendar.timegm(next_month),
        )

    def end_of(self, limit: str) -> int:
        if limit in ("rpm", "tpm"):
            return self.minute_end
        if limit == "usd_per_month":
            return self.month_end
        return self.day_end


@dataclass
class Scope:
    kind: str  # "tenant" or "key"
    pk: str
    limits: Limits


@dataclass(frozen=True)
class Estimate:
    tokens: int
    nano_usd: int


@dataclass
class Hold:
    """One admitted request's reservation; settle it exactly once."""

    service: QuotaService
    tenant: str
    alias: str
    windows: Windows
    counters: list[Counter]
    claims: list[SlotClaim]
    estimate: Estimate
    reserved: bool = True  # False: nothing was reserved, the settlement records the whole request
    headers: dict[str, str] = field(default_factory=dict)
    _settled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def settle(self, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        """Reconcile to the real usage (0s for a call that used nothing) and free the slot. Idempotent."""
        with self._lock:
            if self._settled:
                return
            self._settled = True
        self.service.settle(self, prompt_tokens, completion_tokens, nano(cost_usd))

    def release(self) -> None:
        self.settle(0, 0, 0.0)

    def transaction_items(self, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> list[dict] | None:
        """This settlement as TransactWriteItems entries (all unconditional ADDs and slot releases), to
        ride on the turn's own commit: one round trip fewer. None when already settled or the counter
        store cannot give them; call :meth:`settled_elsewhere` once the transaction carrying them
        succeeded, else :meth:`settle` as usual."""
        with self._lock:
            if self._settled:
                return None
        updates, releases = self.service.settlement(self, prompt_tokens, completion_tokens, nano(cost_usd))
        return self.service.counters.settlement_items(updates, releases)

    def settled_elsewhere(self) -> None:
        """The settlement was written by another transaction: :meth:`settle` is now a no-op."""
        with self._lock:
            self._settled = True


class QuotaService:
    def __init__(
        self,
        counters: CounterStore,
        limits: LimitsStore,
        *,
        output_reserve_tokens: int = 4_096,
        clock: Callable[[], float] = time.time,
        writer: UsageWriter | None = None,
    ) -> None:
        self.counters = counters
        self.writer = writer  # None: every settlement is written before the reply
        self.limits = limits
        self.output_reserve_tokens = output_reserve_tokens
        self.clock = clock
        # What this instance last knew of each minute counter, for x-ratelimit-remaining-* (exact
        # after a 429, a lower bound of use otherwise: other instances' requests are not seen).
        self._seen: dict[tuple[str, str, str], int] = {}
        self._seen_lock = threading.Lock()

    # ---- admission --------------------------------------------------------------
    def scopes(self, tenant: str, key_id: str | None) -> list[Scope]:
        tenant_limits, key_limits = self.limits.get(tenant, key_id)
        scopes = [Scope("tenant", tenant_pk(tenant), tenant_limits)]
        if key_id:
            scopes.append(Scope("key", key_pk(tenant, key_id), key_limits))
        return scopes

    def estimate(self, alias: ModelAlias, prompt_tokens: int, max_output: int | None, choices: int = 1) -> Estimate:
        allowance = min(max_output or self.output_reserve_tokens, self.output_reserve_tokens) * choices
        cost = max(d.cost(prompt_tokens, allowance) for d in alias.deployments)  # a fallback may answer
        return Estimate(prompt_tokens + allowance, math.ceil(cost * NANO))

    def admit(
        self,
        tenant: str,
        key_id: str | None,
        alias: ModelAlias,
        prompt_tokens: int,
        max_output: int | None,
        hold_seconds: float,
        *,
        choices: int = 1,
    ) -> Hold:
        """Reserve the request's estimate on every scope, or raise a 429 (403 for a disallowed model)."""
        scopes = self.scopes(tenant, key_id)
        for scope in scopes:
            if not scope.limits.allows(alias.name):
                raise ModelNotAllowed(
                    f"This API key may not use the model '{alias.name}'.", code="model_not_allowed", param="model"
                )
        now = self.clock()
        windows = Windows.at(now)
        estimate = self.estimate(alias, prompt_tokens, max_output, choices)
        counters = [c for scope in scopes for c in self._counters(scope, windows, estimate)]
        holder = f"{int(now + hold_seconds) + 1}:{uuid.uuid4().hex[:16]}"
        claims = [
            SlotClaim(scope.pk, SLOTS_SK, holder, scope.limits.max_concurrent)
            for scope in scopes
            if scope.limits.max_concurrent is not None
        ]
        for counter in counters:  # an estimate larger than a whole limit can never fit: no write
            for cap in counter.caps:
                if counter.add.get(cap.attr, 0) > cap.limit_value:
                    self._deny(cap, windows, scopes, too_large=True)
        if not claims and not any(c.caps for c in counters):
            # nothing to enforce (an unlimited tenant and key): no reservation, the settlement
            # alone records the request, so usage costs one write round trip, after the call
            hold = Hold(self, tenant, alias.name, windows, counters, claims, Estimate(0, 0), reserved=False)
            hold.headers = self.headers(scopes, windows, now)
            return hold
        for attempt in (1, 2):
            try:
                self.counters.reserve(counters, claims)
                break
            except Denied as denied:
                if denied.index >= len(counters):  # a concurrency slot: free expired holders once, retry
                    claim = claims[denied.index - len(counters)]
                    if attempt == 1 and self._purge_expired(claim, now):
                        continue
                    self._deny(Cap("holders", claim.max, "max_concurrent"), windows, scopes)
                counter = counters[denied.index]
                item = denied.item if denied.item is not None else self.counters.read(counter.pk, counter.sk)
                self._remember(counter, item)
                failing = next(
                    (c for c in counter.caps if item.get(c.attr, 0) + counter.add.get(c.attr, 0) > c.limit_value),
                    counter.caps[0],
                )
                self._deny(failing, windows, scopes)
        hold = Hold(self, tenant, alias.name, windows, counters, claims, estimate)
        for counter in counters:
            self._remember(counter, None)
        hold.headers = self.headers(scopes, windows, now)
        return hold

    def _counters(self, scope: Scope, w: Windows, est: Estimate) -> list[Counter]:
        lim = scope.limits
        counters = []
        if lim.rpm is not None or lim.tpm is not None:
            caps = []
            if lim.rpm is not None:
                caps.append(Cap("req", lim.rpm, "rpm"))
            if lim.tpm is not None:
                caps.append(Cap("tok", lim.tpm, "tpm"))
            counters.append(
                Counter(
                    scope.pk, f"M#{w.minute}", {"req": 1, "tok": est.tokens}, tuple(caps), w.minute_end + MINUTE_TTL
                )
            )
        day_caps = []
        if lim.usd_per_day is not None:
            day_caps.append(Cap("nusd", int(lim.usd_per_day * NANO), "usd_per_day"))
        if lim.tokens_per_day is not None:
            day_caps.append(Cap("tok", lim.tokens_per_day, "tokens_per_day"))
        # the day counter always moves: it is what /v1/usage reads
        counters.append(
            Counter(
                scope.pk,
                f"D#{w.day}",
                {"req": 1, "tok": est.tokens, "nusd": est.nano_usd},
                tuple(day_caps),
                w.day_end + USAGE_TTL,
            )
        )
        if lim.usd_per_month is not None:
            counters.append(
                Counter(
                    scope.pk,
                    f"MO#{w.month}",
                    {"nusd": est.nano_usd},
                    (Cap("nusd", int(lim.usd_per_month * NANO), "usd_per_month"),),
                    w.month_end + USAGE_TTL,
                )
            )
        return counters

    def _purge_expired(self, claim: SlotClaim, now: float) -> bool:
        holders = self.counters.read(claim.pk, claim.sk).get("holders") or set()
        expired = [h for h in holders if int(h.split(":", 1)[0]) < now]
        if expired:
            from llm_gateway.observability import logger  # observability imports chat, which imports us

            self.counters.purge(claim.pk, claim.sk, expired)
            logger.info("expired concurrency slots freed", extra={"slots": len(expired)})
        return bool(expired)

    def _deny(self, cap: Cap, windows: Windows, scopes: list[Scope], *, too_large: bool = False) -> None:
        now = self.clock()
        retry_after = 1.0 if cap.limit == "max_concurrent" else max(1.0, math.ceil(windows.end_of(cap.limit) - now))
        headers = self.headers(scopes, windows, now)
        what = {
            "rpm": "requests per minute",
            "tpm": "tokens per minute",
            "max_concurrent": "concurrent requests",
            "usd_per_day": "spend per day (USD)",
            "usd_per_month": "spend per month (USD)",
            "tokens_per_day": "tokens per day",
        }[cap.limit]
        shown = cap.limit_value / NANO if cap.limit.startswith("usd") else cap.limit_value
        if too_large:
            message = f"This request's estimate alone exceeds the limit on {what} ({cap.limit}: {shown})."
        else:
            message = f"Limit reached on {what} ({cap.limit}: {shown}). Retry after {math.ceil(retry_after)} s."
        if cap.limit in BUDGET_LIMITS:
            raise QuotaExhausted(message, retry_after=retry_after, headers=headers)
        error = RateLimited(message, retry_after=retry_after, headers=headers)
        if too_large:  # a retry cannot succeed
            error.headers["x-should-retry"] = "false"
        raise error

    # ---- x-ratelimit-* ----------------------------------------------------------
    def _remember(self, counter: Counter, item: dict | None) -> None:
        if not counter.sk.startswith("M#"):
            return
        with self._seen_lock:
            if len(self._seen) > 50_000:
                self._seen.clear()
            for attr in ("req", "tok"):
                key = (counter.pk, counter.sk, attr)
                if item is not None:
                    self._seen[key] = int(item.get(attr, 0))
                else:
                    self._seen[key] = self._seen.get(key, 0) + counter.add.get(attr, 0)

    def headers(self, scopes: list[Scope], windows: Windows, now: float) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the tighter scope of each limit that is set."""
        headers: dict[str, str] = {}
        reset = f"{max(1, math.ceil(windows.minute_end - now))}s"
        for name, attr, field_ in (("requests", "req", "rpm"), ("tokens", "tok", "tpm")):
            remaining = []
            limits = []
            for scope in scopes:
                limit = getattr(scope.limits, field_)
                if limit is None:
                    continue
                used = self._seen.get((scope.pk, f"M#{windows.minute}", attr), 0)
                limits.append(limit)
                remaining.append(max(0, limit - used))
            if limits:
                headers[f"x-ratelimit-limit-{name}"] = str(min(limits))
                headers[f"x-ratelimit-remaining-{name}"] = str(min(remaining))
                headers[f"x-ratelimit-reset-{name}"] = reset
        return headers

    # ---- settlement -------------------------------------------------------------
    def drain(self, timeout: float = 2.0) -> bool:
        """Wait for this process's usage writes still pending (before a usage read); False on timeout."""
        return self.writer is None or self.writer.drain(timeout)

    def settle(self, hold: Hold, prompt_tokens: int, completion_tokens: int, nano_usd: int) -> None:
        """Write the settlement. A hold that enforces nothing (no cap, no slot) is handed to the usage
        writer, off the reply's path; one with a cap or a slot is written now, so limits hold exactly
        and a sequential client never meets its own slot. Also now when the writer is full."""
        updates, releases = self.settlement(hold, prompt_tokens, completion_tokens, nano_usd)
        if self.writer is not None and not hold.reserved and not releases and self.writer.submit(updates):
            return
        try:
            self.counters.settle(updates, releases, uuid.uuid4().hex)
        except Exception as exc:  # the call already happened: never fail the reply over bookkeeping
            from llm_gateway.observability import logger

            logger.warning("quota settlement failed", extra={"error_type": type(exc).__name__})

    def settlement(
        self, hold: Hold, prompt_tokens: int, completion_tokens: int, nano_usd: int
    ) -> tuple[list[Counter], list[tuple[str, str, str]]]:
        """The settlement's writes: each counter's reconciliation, the per-model usage, the slot releases."""
        tokens = prompt_tokens + completion_tokens
        dt, dc = tokens - hold.estimate.tokens, nano_usd - hold.estimate.nano_usd
        updates: list[Counter] = []
        first = {} if hold.reserved else {"req": 1}  # the request itself, when not counted at admission
        for c in hold.counters:
            if c.sk.startswith("M#"):
                add = {**first, "tok": dt}
            elif c.sk.startswith("D#"):
                add = {**first, "tok": dt, "nusd": dc, "in": prompt_tokens, "out": completion_tokens}
            else:
                add = {"nusd": dc}
            updates.append(Counter(c.pk, c.sk, {k: v for k, v in add.items() if v}, ttl=c.ttl))
        tenant_day = next(c for c in hold.counters if c.sk.startswith("D#"))
        per_model = {"req": 1, "tok": tokens, "in": prompt_tokens, "out": completion_tokens, "nusd": nano_usd}
        per_model = {k: v for k, v in per_model.items() if v}
        updates.append(Counter(tenant_day.pk, f"{tenant_day.sk}#A#{hold.alias}", per_model, ttl=tenant_day.ttl))
        return updates, [(c.pk, c.sk, c.holder) for c in hold.claims]
