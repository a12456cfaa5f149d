"""Usage reports from the quota counters: what a tenant was charged is what was enforced.

Day totals (``group_by=day``, ``key``) come from the day counters, which a request moves when
it is admitted (its estimate) and again when it is settled (the difference), so a request in
flight shows its reservation. Per-model rows (``group_by=model``) are written at settlement
only. Costs are kept in nano-USD and reported in USD.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any, Literal

from llm_gateway.errors import InvalidRequest
from llm_gateway.quotas.counters import NANO, CounterStore
from llm_gateway.quotas.service import key_pk, tenant_pk

GroupBy = Literal["day", "model", "key"]
GROUPS = ("day", "model", "key")
MAX_DAYS = 400  # day counters live ~13 months (USAGE_TTL)
_DAY_SK = re.compile(r"^D#(\d{8})$")
_MODEL_SK = re.compile(r"^D#(\d{8})#A#(.+)$")


def parse_day(value: str | None, param: str, default: dt.date) -> dt.date:
    """YYYY-MM-DD or Unix seconds (UTC)."""
    if value is None or value == "":
        return default
    try:
        if value.isdigit():
            return dt.datetime.fromtimestamp(int(value), dt.UTC).date()
        return dt.date.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise InvalidRequest(f"'{param}' must be a date (YYYY-MM-DD) or Unix seconds.", param=param) from None


def date_range(start: str | None, end: str | None, today: dt.date) -> tuple[dt.date, dt.date]:
    """The inclusive UTC day range of a report; default: this month so far."""
    first = parse_day(start, "start", today.replace(day=1))
    last = parse_day(end, "end", today)
    if last < first:
        raise InvalidRequest("'end' is before 'start'.", param="end")
    if (last - first).days >= MAX_DAYS:
        raise InvalidRequest(f"A report covers at most {MAX_DAYS} days.", param="start")
    return first, last


def _row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": int(item.get("req", 0)),
        "input_tokens": int(item.get("in", 0)),
        "output_tokens": int(item.get("out", 0)),
        "cost_usd": int(item.get("nusd", 0)) / NANO,
        "_nusd": int(item.get("nusd", 0)),
    }


def _add(total: dict[str, Any], row: dict[str, Any]) -> None:
    for name in ("requests", "input_tokens", "output_tokens", "_nusd"):
        total[name] = total.get(name, 0) + row[name]
    total["cost_usd"] = total["_nusd"] / NANO


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def usage_report(
    counters: CounterStore,
    tenant: str,
    first: dt.date,
    last: dt.date,
    group_by: str,
    key_ids: list[str] | None = None,
) -> dict[str, Any]:
    """The tenant's requests, input and output tokens and cost between two days, grouped."""
    if group_by not in GROUPS:
        raise InvalidRequest("'group_by' must be one of day, model, key.", param="group_by")
    lo, hi = f"D#{first:%Y%m%d}", f"D#{last:%Y%m%d}#~"
    groups: dict[str, dict[str, Any]] = {}
    if group_by == "key":
        for key_id in key_ids or []:
            for item in counters.query(key_pk(tenant, key_id), lo, hi):
                if _DAY_SK.match(item.get("SK", "")):
                    _add(groups.setdefault(key_id, {"key": key_id}), _row(item))
    else:
        for item in counters.query(tenant_pk(tenant), lo, hi):
            sk = item.get("SK", "")
            day, model = _DAY_SK.match(sk), _MODEL_SK.match(sk)
            if group_by == "day" and day:
                name = f"{day.group(1)[:4]}-{day.group(1)[4:6]}-{day.group(1)[6:]}"
                _add(groups.setdefault(name, {"day": name}), _row(item))
            elif group_by == "model" and model:
                _add(groups.setdefault(model.group(2), {"model": model.group(2)}), _row(item))
    total: dict[str, Any] = {}
    for row in groups.values():
        _add(total, row)
    if not total:
        _add(total, _row({}))
    return {
        "object": "usage.report",
        "tenant": tenant,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "group_by": group_by,
        "data": [_public(groups[k]) for k in sorted(groups)],
        "total": _public(total),
    }


def month_days(day: dt.date) -> int:
    return calendar.monthrange(day.year, day.month)[1]
