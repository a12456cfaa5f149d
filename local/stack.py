"""``make dev``: the whole gateway on one machine, no Docker, no AWS account, no model key.

One process tree, loopback only:

* moto in server mode (its own process) holding the table, KMS key and SQS queues
  that ``template.yaml`` declares (provisioned from the template itself);
* the fake OpenAI-compatible upstream as the ``default`` model — unless
  ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` are set, which route ``default`` to that
  real upstream instead; either way the provider key goes through KMS encryption
  exactly as a deployment's does;
* a dev tenant with the API key ``sk-local-dev`` (``GATEWAY_API_KEY`` overrides) and the admin
  key ``sk-local-admin`` (``GATEWAY_ADMIN_KEY`` overrides);
* the SQS pollers feeding the worker handler (jobs queue) and the dead-letter consumer (its DLQ)
  like the Lambda event source mappings;
* the FastAPI app under uvicorn on 127.0.0.1:3000 (``PORT`` overrides).

Ctrl-C (or SIGTERM) stops all of it, in order: the API first (streams in flight end with
a ``server_shutting_down`` error event), then the poller, then the upstream and moto; exit
status 0, no traceback. A port already in use is reported before anything starts, and the
command exits non-zero. While it runs, ``.local-stack/stack.json`` (local/state.py) tells
``bin/llm-gateway-admin`` and ``bin/llm-gateway chat`` where it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from local.resources import MotoServer, boto_session, provision
from local.state import remove_state, write_state

HOST = "127.0.0.1"
DEV_TENANT = "local-dev"
FAKE_UPSTREAM_KEY = "sk-fake-upstream-local"


@dataclass
class StackConfig:
    port: int
    api_key: str
    moto_port: int
    upstream_port: int
    real_base_url: str | None
    real_api_key: str | None
    default_model: str
    data_dir: str | None = None  # LOCAL_DATA_DIR: where moto's state is kept (make dev: .local-stack/data)
    reset: bool = False  # RESET=1: start empty

    @classmethod
    def from_env(cls, env: dict[str, str]) -> StackConfig:
        def port(name: str, default: int) -> int:
            value = env.get(name)
            try:
                return int(value) if value else default
            except ValueError:
                raise SystemExit(f"error: {name}={value!r} is not a port number") from None

        real_url, real_key = env.get("OPENAI_BASE_URL"), env.get("OPENAI_API_KEY")
        return cls(
            port=port("PORT", 3000),
            api_key=env.get("GATEWAY_API_KEY") or "sk-local-dev",
            moto_port=port("MOTO_PORT", 0),
            upstream_port=port("FAKE_UPSTREAM_PORT", 0),
            real_base_url=real_url if real_url and real_key else None,
            real_api_key=real_key if real_url and real_key else None,
            default_model=env.get("DEFAULT_MODEL") or ("gpt-4o-mini" if real_url and real_key else "fake-model"),
            data_dir=env.get("LOCAL_DATA_DIR") or None,
            reset=env.get("RESET", "") not in ("", "0", "false", "no"),
        )


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def check_ports(config: StackConfig) -> None:
    wanted = {"PORT (the API)": config.port, "MOTO_PORT": config.moto_port}
    if not config.real_base_url:
        wanted["FAKE_UPSTREAM_PORT"] = config.upstream_port
    for name, port in wanted.items():
        if port and not port_free(port):
            raise SystemExit(
                f"error: {HOST}:{port} ({name}) is already in use. Stop whatever holds it, "
                f"or choose another port, e.g. `PORT={config.port + 1} make dev`."
            )


def banner(config: StackConfig, upstream: str) -> str:
    base = f"http://{HOST}:{config.port}"
    admin_key = os.environ.get("GATEWAY_ADMIN_KEY") or "sk-local-admin"
    return f"""
llm-gateway is running (local stack: moto + {upstream})

  API       {base}/v1        docs: {base}/docs
  API key   {config.api_key}
  model     default

  curl {base}/v1/chat/completions \\
    -H "Authorization: Bearer {config.api_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "default", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  .venv/bin/python -c 'from openai import OpenAI; c = OpenAI(base_url="{base}/v1", api_key="{config.api_key}"); \\
r = c.chat.completions.create(model="default", messages=[{{"role": "user", "content": "Hello"}}]); \\
print(r.choices[0].message.content)'

  chat      bin/llm-gateway chat                 (or: bin/llm-gateway chat -m "Hello")
            (installed too: .venv/bin/llm-gateway chat, or llm-gateway chat after source .venv/bin/activate)
  admin     bin/llm-gateway-admin keys create --tenant acme
            (finds this stack through .local-stack/stack.json; or: make admin ARGS="keys list")
            admin API key {admin_key} for {base}/v1/admin/...

Ctrl-C stops everything.
"""


@contextlib.contextmanager
def local_stack(config: StackConfig) -> Iterator[dict[str, str]]:
    """Start moto, the upstream, resources and the dev tenant; yield the app's environment."""
    with contextlib.ExitStack() as stack:
        if config.data_dir and config.reset:
            shutil.rmtree(config.data_dir, ignore_errors=True)
        moto = stack.enter_context(MotoServer(config.moto_port, data_dir=config.data_dir))
        session = boto_session()
        resources = provision(session, moto.endpoint)
        kms = session.client("kms", endpoint_url=moto.endpoint)

        if config.real_base_url:
            base_url, plaintext_key, upstream = config.real_base_url, config.real_api_key, config.real_base_url
        else:
            from local.fake_upstream import FakeUpstream

            fake = stack.enter_context(FakeUpstream(HOST, config.upstream_port, api_key=FAKE_UPSTREAM_KEY))
            base_url, plaintext_key, upstream = fake.url, FAKE_UPSTREAM_KEY, f"fake upstream at {fake.url}"

        from llm_gateway.security.provider_keys import encrypt_key
        from llm_gateway.upstream.aliases import DEFAULT_KEY_REF

        ciphertext = encrypt_key(plaintext_key, DEFAULT_KEY_REF, resources.kms_key_id, kms)
        env = {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "TABLE_NAME": resources.table_name,
            "KMS_KEY_ID": resources.kms_key_id,
            "JOBS_QUEUE_URL": resources.jobs_queue_url,
            "DEAD_LETTER_QUEUE_URL": resources.dead_letter_queue_url,
            "JOBS_PARKED_QUEUE_URL": resources.parked_queue_url,
            "OPENAI_BASE_URL": base_url,
            "DEFAULT_MODEL": config.default_model,
            "PROVIDER_KEY_CIPHERTEXT": ciphertext,
            "LOCAL_UPSTREAM": upstream,
            # EMF lines are for CloudWatch; locally they would drown the logs. SHOW_METRICS=1 keeps them.
            "POWERTOOLS_METRICS_DISABLED": "false" if os.environ.get("SHOW_METRICS") else "true",
        }
        os.environ.pop("OPENAI_API_KEY", None)  # the app only ever sees the ciphertext
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update(env)

        from llm_gateway.security.api_keys import ApiKeyStore

        keys = ApiKeyStore(resources.table_name, client=session.client("dynamodb", endpoint_url=moto.endpoint))
        # both may be kept from the last run (the local data folder)
        if keys.lookup(config.api_key) is None:
            keys.create(DEV_TENANT, "make dev", key=config.api_key)
        # an admin key for /v1/admin/... (GATEWAY_ADMIN_KEY overrides)
        admin_key = os.environ.get("GATEWAY_ADMIN_KEY") or "sk-local-admin"
        if keys.lookup(admin_key) is None:
            keys.create(DEV_TENANT, "make dev admin", key=admin_key, admin=True)
        for poller in start_pollers(session, moto.endpoint, resources):
            stack.callback(poller.stop)
        aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
        write_state(
            {
                "pid": os.getpid(),
                "api_url": f"http://{HOST}:{config.port}/v1",
                "api_key": config.api_key,
                "table_name": resources.table_name,
                "kms_key_id": resources.kms_key_id,
                "jobs_queue_url": resources.jobs_queue_url,
                "jobs_parked_queue_url": resources.parked_queue_url,
                "aws": aws,
                "app_env": env,  # what another API process on this stack runs with (local/api.py)
            }
        )
        stack.callback(remove_state)
        yield env


def start_pollers(session, endpoint: str, resources) -> list:
    """The SQS pollers feeding the worker (jobs queue) and the dead-letter consumer (its DLQ), as
    their event source mappings do, when the functions are there."""
    try:
        from dead_letters import handler as dead_letter_handler

        from local.poller import SqsPoller
        from worker import handler
    except ImportError:
        return []
    sqs = session.client("sqs", endpoint_url=endpoint)
    jobs = SqsPoller(sqs, resources.jobs_queue_url, handler).start()
    dead = SqsPoller(
        sqs, resources.dead_letter_queue_url, dead_letter_handler, function_name="DeadLetterFunction"
    ).start()
    return [jobs, dead]


def json_uvicorn_logs() -> None:
    """uvicorn's loggers through the Powertools JSON logger (its handler and formatter)."""
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    from llm_gateway.observability import logger

    # Powertools configures top-level loggers; uvicorn's children then propagate to "uvicorn".
    copy_config_to_registered_loggers(source_logger=logger, include={"uvicorn"}, log_level="WARNING")
    for child in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(child).handlers.clear()
        logging.getLogger(child).propagate = True


def main() -> int:
    config = StackConfig.from_env(dict(os.environ))
    check_ports(config)
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            from sse import end_all_streams

            end_all_streams()  # before uvicorn waits for the connections to close
            await super().shutdown(sockets)

    with local_stack(config) as env:
        from app import app

        # log_config=None: uvicorn leaves logging alone, and its own loggers (startup errors, ASGI
        # tracebacks) then write through the app's Powertools JSON logger like every other line.
        # Its access log stays off: the app's middleware writes one JSON access line per request.
        server = Server(
            uvicorn.Config(
                app,
                host=HOST,
                port=config.port,
                log_config=None,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=5,
                # uvloop and httptools, as functions/api/run.sh runs it in Lambda ("auto": uvicorn picks
                # them when installed, so a venv from before the lock added them still starts)
                loop="auto",
                http="auto",
            )
        )
        json_uvicorn_logs()
        print(banner(config, env["LOCAL_UPSTREAM"]), flush=True)
        server.run()
        if not server.started:
            print(f"error: could not serve on {HOST}:{config.port}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    # SIGTERM stops like Ctrl-C. uvicorn re-raises the signal once it has shut down; the
    # KeyboardInterrupt then unwinds local_stack(), which stops the poller, upstream and moto.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = main()
    except KeyboardInterrupt:
        print("llm-gateway local stack stopped.", flush=True)
        code = 0
    raise SystemExit(code)
