"""Operator commands: gateway API keys and provider-key encryption.

    bin/llm-gateway-admin keys create --tenant acme [--name ci]
    bin/llm-gateway-admin keys list [--tenant acme]
    bin/llm-gateway-admin keys revoke key_0123456789ab
    bin/llm-gateway-admin jobs redrive [--from <JobsParkedQueueUrl>] [--to <JobsQueueUrl>]
    bin/llm-gateway-admin encrypt-key --kms-key-id <ProviderKeyArn> [--deployment default]
    bin/llm-gateway-admin limits set --tenant acme [--key key_0123456789ab] --rpm 60 --usd-per-day 5
    bin/llm-gateway-admin limits get --tenant acme [--key key_0123456789ab]
    bin/llm-gateway-admin usage --tenant acme [--start 2026-12-01] [--end 2026-12-31] [--group-by day|model|key]

``limits set`` replaces the whole set: a limit not given is unlimited.

The table comes from ``TABLE_NAME`` (or ``--table``); AWS credentials and region from
the usual AWS environment (``bin/llm-gateway-admin`` fills them in for a running ``make dev``).
AWS failures (no such table, endpoint unreachable, no credentials) are one line on stderr and
exit status 1, never a traceback. ``encrypt-key`` reads the plaintext from standard input
(or a hidden prompt), never from the command line, and prints only the ciphertext.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from llm_gateway.upstream.aliases import DEFAULT_KEY_REF


def _keys(args: argparse.Namespace):
    from llm_gateway.security.api_keys import ApiKeyStore
    from llm_gateway.settings import get_settings

    return ApiKeyStore(args.table or get_settings().table_name)


def cmd_keys_create(args: argparse.Namespace) -> int:
    key, record = _keys(args).create(args.tenant, args.name, admin=args.admin)
    print(json.dumps({**record.public(), "key": key}, indent=2))
    print("Store this key now: it is not shown again.", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    print(json.dumps([k.public() for k in _keys(args).list(args.tenant)], indent=2))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    print(json.dumps(_keys(args).revoke(args.key_id).public(), indent=2))
    return 0


def _dynamodb(args: argparse.Namespace):
    from llm_gateway.aws import client
    from llm_gateway.settings import get_settings

    return args.table or get_settings().table_name, client("dynamodb")


def _limits_store(args: argparse.Namespace):
    from llm_gateway.quotas.limits import DynamoLimitsStore, parse_limits
    from llm_gateway.settings import get_settings

    table, dynamodb = _dynamodb(args)
    return DynamoLimitsStore(table, dynamodb, defaults=parse_limits(get_settings().quota_default_limits))


LIMIT_FLAGS = ("rpm", "tpm", "max_concurrent", "usd_per_day", "usd_per_month", "tokens_per_day")


def cmd_limits_set(args: argparse.Namespace) -> int:
    from llm_gateway.quotas.limits import Limits

    values = {name: getattr(args, name) for name in LIMIT_FLAGS if getattr(args, name) is not None}
    if args.models is not None:
        values["models"] = [m for m in args.models.split(",") if m]
    limits = Limits(**values)
    store = _limits_store(args)
    if args.key:
        store.put_key(args.tenant, args.key, limits)
    else:
        store.put_tenant(args.tenant, limits)
    print(json.dumps({"tenant": args.tenant, "key": args.key, "limits": limits.public()}, indent=2))
    return 0


def cmd_limits_get(args: argparse.Namespace) -> int:
    store = _limits_store(args)
    tenant_limits, key_limits = store.get(args.tenant, args.key)
    shown = key_limits if args.key else tenant_limits
    print(json.dumps({"tenant": args.tenant, "key": args.key, "limits": shown.public()}, indent=2))
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from llm_gateway.quotas.admin import AdminService
    from llm_gateway.quotas.counters import DynamoCounterStore
    from llm_gateway.security.api_keys import ApiKeyStore

    table, dynamodb = _dynamodb(args)
    admin = AdminService(ApiKeyStore(table, dynamodb), _limits_store(args), DynamoCounterStore(table, dynamodb))
    print(json.dumps(admin.usage(None, args.tenant, args.start, args.end, args.group_by), indent=2))
    return 0


def cmd_jobs_redrive(args: argparse.Namespace) -> int:
    from llm_gateway.aws import client
    from llm_gateway.jobs.dead_letters import redrive
    from llm_gateway.settings import get_settings

    settings = get_settings()
    source = args.source or settings.jobs_parked_queue_url
    destination = args.destination or settings.jobs_queue_url
    if not source or not destination:
        print("error: name the queues (--from / --to, or JOBS_PARKED_QUEUE_URL / JOBS_QUEUE_URL)", file=sys.stderr)
        return 2
    done = redrive(client("sqs"), source, destination, per_second=args.per_second)
    print(json.dumps({"method": done.method, "task_handle": done.task_handle, "moved": done.moved}))
    if done.task_handle is None:
        print("(this endpoint has no StartMessageMoveTask: moved by receive + send + delete)", file=sys.stderr)
    return 0


def cmd_encrypt_key(args: argparse.Namespace) -> int:
    from llm_gateway.aws import client
    from llm_gateway.security.provider_keys import encrypt_key

    hidden = sys.stdin.isatty()
    plaintext = (getpass.getpass("Provider API key (input hidden): ") if hidden else sys.stdin.read()).strip()
    if not plaintext:
        print("error: no key given on standard input", file=sys.stderr)
        return 2
    print(encrypt_key(plaintext, args.deployment, args.kms_key_id, client("kms")))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llm-gateway-admin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--table", help="DynamoDB table (default: $TABLE_NAME)")
    sub = p.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="gateway API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key for a tenant; prints it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--admin", action="store_true", help="the key may call /v1/admin/...")
    create.set_defaults(func=cmd_keys_create)
    listing = keys.add_parser("list", help="list keys (ids and tenants, never the keys)")
    listing.add_argument("--tenant")
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)

    limits = sub.add_parser("limits", help="tenant and key limits").add_subparsers(dest="limits_command", required=True)
    lset = limits.add_parser("set", help="replace a tenant's (or, with --key, a key's) limits")
    lset.add_argument("--tenant", required=True)
    lset.add_argument("--key", help="a key id (key_...): set that key's tighter limits")
    for name in ("rpm", "tpm", "max_concurrent", "tokens_per_day"):
        lset.add_argument("--" + name.replace("_", "-"), dest=name, type=int)
    for name in ("usd_per_day", "usd_per_month"):
        lset.add_argument("--" + name.replace("_", "-"), dest=name, type=float)
    lset.add_argument("--models", help="comma-separated aliases the tenant/key may use (default: all)")
    lset.set_defaults(func=cmd_limits_set)
    lget = limits.add_parser("get", help="show a tenant's (or a key's) limits")
    lget.add_argument("--tenant", required=True)
    lget.add_argument("--key")
    lget.set_defaults(func=cmd_limits_get)

    usage = sub.add_parser("usage", help="a tenant's requests, tokens and cost")
    usage.add_argument("--tenant", required=True)
    usage.add_argument("--start", help="YYYY-MM-DD (default: the first of this month)")
    usage.add_argument("--end", help="YYYY-MM-DD (default: today), inclusive")
    usage.add_argument("--group-by", dest="group_by", choices=("day", "model", "key"), default="day")
    usage.set_defaults(func=cmd_usage)

    jobs = sub.add_parser("jobs", help="async jobs").add_subparsers(dest="jobs_command", required=True)
    rd = jobs.add_parser("redrive", help="move parked (dead-lettered) job messages back to the jobs queue")
    rd.add_argument("--from", dest="source", help="the parked queue URL (default: $JOBS_PARKED_QUEUE_URL)")
    rd.add_argument("--to", dest="destination", help="the jobs queue URL (default: $JOBS_QUEUE_URL)")
    rd.add_argument("--per-second", dest="per_second", type=int, help="StartMessageMoveTask's rate limit")
    rd.set_defaults(func=cmd_jobs_redrive)

    enc = sub.add_parser("encrypt-key", help="encrypt a provider key (stdin) for the stack's KMS key")
    enc.add_argument("--kms-key-id", required=True, help="the stack's ProviderKeyArn output, or its alias")
    enc.add_argument(
        "--deployment",
        "--key-ref",
        dest="deployment",
        default=DEFAULT_KEY_REF,
        help="the deployment that will use the key (named in the KMS encryption context)",
    )
    enc.set_defaults(func=cmd_encrypt_key)
    return p


def describe_failure(exc: Exception, table: str) -> str:
    """One line for an AWS or gateway failure of an admin command."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    from llm_gateway.errors import GatewayError

    if isinstance(exc, GatewayError):
        return exc.message
    if isinstance(exc, EndpointConnectionError):
        return (
            f"cannot reach {exc.kwargs.get('endpoint_url')}: is the stack running? "
            "(`make dev` for the local one, or set AWS_ENDPOINT_URL / TABLE_NAME)"
        )
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials: configure them (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), or start `make dev`"
    if isinstance(exc, NoRegionError):
        return "no AWS region: set AWS_REGION"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") == "ResourceNotFoundException":
            return f"table '{table}' does not exist: set TABLE_NAME (or --table), or start `make dev`"
        return f"{error.get('Code', 'AWS error')}: {error.get('Message', str(exc))}"
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from llm_gateway.errors import GatewayError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (BotoCoreError, ClientError, GatewayError) as exc:
        from llm_gateway.settings import get_settings

        print(f"error: {describe_failure(exc, args.table or get_settings().table_name)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
