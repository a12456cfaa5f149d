"""Operator commands: gateway API keys and provider-key encryption.

    bin/llm-gateway-admin keys create --tenant acme [--name ci]
    bin/llm-gateway-admin keys list [--tenant acme]
    bin/llm-gateway-admin keys revoke key_0123456789ab
    bin/llm-gateway-admin encrypt-key --kms-key-id <ProviderKeyArn> [--deployment default]

The table comes from ``TABLE_NAME`` (or ``--table``); AWS credentials and region from
the usual AWS environment. ``encrypt-key`` reads the plaintext from standard input
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
    key, record = _keys(args).create(args.tenant, args.name)
    print(json.dumps({**record.public(), "key": key}, indent=2))
    print("Store this key now: it is not shown again.", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    print(json.dumps([k.public() for k in _keys(args).list(args.tenant)], indent=2))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    print(json.dumps(_keys(args).revoke(args.key_id).public(), indent=2))
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
    create.set_defaults(func=cmd_keys_create)
    listing = keys.add_parser("list", help="list keys (ids and tenants, never the keys)")
    listing.add_argument("--tenant")
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)

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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
