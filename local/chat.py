"""``bin/llm-gateway chat``: a terminal chat against any llm-gateway, the conversation kept server-side.

    bin/llm-gateway chat                              # interactive, a new conversation
    bin/llm-gateway chat --conversation conv_…        # resume one
    bin/llm-gateway chat -m "question"                # one-shot: print the answer, exit (for scripts)
    echo "question" | bin/llm-gateway chat            # the same, the question on stdin

The gateway is ``--base-url`` / ``--api-key``, else ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (the
openai SDK's own variables), else the running ``make dev`` stack (``.local-stack/stack.json``),
else http://127.0.0.1:3000/v1 with ``sk-local-dev``.

Interactive: Enter sends, Esc then Enter (or a paste) adds a line; ``/new``, ``/history``,
``/model NAME``, ``/exit`` (or Ctrl-D). Ctrl-C during a reply cancels it (the gateway stores
nothing of a reply it could not finish) and returns to the prompt; at the prompt it clears the line.
Every failure is one line (``error: 429 rate_limit_exceeded: …``), never a traceback.

This is a client of the public HTTP API (it uses only the ``openai`` SDK), so it lives with the
developer tools in ``local/``, not in the Lambda layer. A conversation is created with
``POST /v1/conversations`` and continued with Chat Completions' ``conversation_id`` extension;
``/history`` lists its items (``GET /v1/conversations/{id}/items``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from local.state import read_state

LOCAL_URL, LOCAL_KEY = "http://127.0.0.1:3000/v1", "sk-local-dev"
HELP = "/new  new conversation · /history · /model NAME · /exit   (Esc Enter: new line, Ctrl-C: cancel reply)"


def gateway(base_url: str | None, api_key: str | None, env: dict[str, str]) -> tuple[str, str]:
    """The gateway to talk to: flags, then the openai SDK's variables, then the local stack."""
    state = read_state() or {}
    url = base_url or env.get("OPENAI_BASE_URL") or state.get("api_url") or LOCAL_URL
    key = api_key or env.get("OPENAI_API_KEY") or state.get("api_key") or LOCAL_KEY
    return url, key


def describe(exc: Exception, base_url: str) -> str:
    """One readable line for a failed request or stream."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # also APITimeoutError
        what = "timed out" if isinstance(exc, openai.APITimeoutError) else "unreachable"
        return f"cannot reach the gateway at {base_url} ({what}): is it running?"
    if isinstance(exc, openai.APIError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", body) if isinstance(body.get("error", body), dict) else body
        message = error.get("message") or exc.message
        code = error.get("code") or error.get("type")
        status = getattr(exc, "status_code", None)
        head = " ".join(str(p) for p in (status, code) if p)
        retry = getattr(exc, "response", None) is not None and exc.response.headers.get("retry-after")
        tail = f" (retry after {retry} s)" if retry else ""
        return f"{head}: {message}{tail}" if head else f"{message}{tail}"
    return f"{type(exc).__name__}: {exc}"


def history(client: Any, conversation_id: str) -> list[tuple[str, str]]:
    """(role, text) of the conversation's messages, oldest first (OpenAI's conversation items,
    ``GET /v1/conversations/{id}/items``, every page); tool calls and outputs are shown by type."""
    out = []
    for item in client.conversations.items.list(conversation_id, order="asc", limit=100):
        if item.type != "message":
            out.append((item.type, getattr(item, "name", None) or getattr(item, "output", None) or ""))
            continue
        text = "\n".join(getattr(part, "text", None) or getattr(part, "refusal", None) or "" for part in item.content)
        out.append((item.role, text))
    return out


class Chat:
    def __init__(self, client: Any, base_url: str, model: str, conversation_id: str | None, console: Any) -> None:
        self.client = client
        self.base_url = base_url
        self.model = model
        self.conversation_id = conversation_id
        self.console = console

    def new_conversation(self) -> str:
        self.conversation_id = self.client.conversations.create().id
        return self.conversation_id

    def ask(self, text: str, out: Any) -> bool:
        """Send one user message and stream the reply to ``out(str)``; False if it failed."""
        extra = {"conversation_id": self.conversation_id} if self.conversation_id else None
        stream = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": text}], stream=True, extra_body=extra
        )
        try:
            for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        out(choice.delta.content)
        finally:
            stream.close()  # a cancelled reply closes the connection: the gateway stores nothing of it
        return True

    def error(self, exc: Exception) -> None:
        self.console.print(f"[bold red]error:[/] {describe(exc, self.base_url)}", markup=True, highlight=False)

    def command(self, line: str) -> bool:
        """Run a /command; False to leave the session."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/new":
            self.console.print(f"[dim]new conversation {self.new_conversation()}[/]")
        elif name == "/history":
            if not self.conversation_id:
                self.console.print("[dim](no conversation)[/]")
            for role, text in history(self.client, self.conversation_id) if self.conversation_id else []:
                self.console.print(f"[bold]{role}>[/] ", end="")
                self.console.print(text, markup=False, highlight=False)
        elif name == "/model":
            if arg:
                self.model = arg
            self.console.print(f"[dim]model {self.model}[/]")
        else:
            self.console.print(f"[dim]{HELP}[/]")
        return True


def prompt_session() -> Any:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.key_binding import KeyBindings

    keys = KeyBindings()

    @keys.add("enter")
    def _send(event) -> None:
        event.current_buffer.validate_and_handle()

    @keys.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    return PromptSession(multiline=True, key_bindings=keys, prompt_continuation="... ")


def interactive(chat: Chat) -> int:
    console = chat.console
    session = prompt_session()
    try:
        if not chat.conversation_id:
            chat.new_conversation()
    except Exception as exc:
        chat.error(exc)
        return 1
    console.print(
        f"[bold]llm-gateway chat[/] {chat.base_url} · model {chat.model} · conversation {chat.conversation_id}\n"
        f"[dim]resume with: bin/llm-gateway chat --conversation {chat.conversation_id}\n{HELP}[/]",
        highlight=False,
    )
    while True:
        try:
            line = session.prompt("you> ")
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt clears the line
        except EOFError:
            return 0
        text = line.strip()
        if not text:
            continue
        try:
            if text.startswith("/"):
                if not chat.command(text):
                    return 0
                continue
            console.print("[bold cyan]assistant>[/] ", end="")
            chat.ask(line, lambda delta: console.print(delta, end="", markup=False, highlight=False))
            console.print()
        except KeyboardInterrupt:
            console.print("\n[yellow](reply cancelled)[/]")
        except Exception as exc:
            console.print()
            chat.error(exc)


def one_shot(chat: Chat, text: str) -> int:
    def out(delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    try:
        chat.ask(text, out)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"error: {describe(exc, chat.base_url)}", file=sys.stderr)
        return 1
    sys.stdout.write("\n")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-gateway", description="llm-gateway client commands")
    sub = p.add_subparsers(dest="command", required=True)
    chat = sub.add_parser(
        "chat", help="chat in the terminal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    chat.add_argument("--base-url", help="the gateway's /v1 URL (default: $OPENAI_BASE_URL, then the local stack)")
    chat.add_argument("--api-key", help="a gateway key (default: $OPENAI_API_KEY, then the local stack's)")
    chat.add_argument("--model", default="default", help="model alias (default: default)")
    chat.add_argument("--conversation", metavar="CONV_ID", help="continue this conversation")
    chat.add_argument("-m", "--message", help="one-shot: send this, print the answer, exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from openai import OpenAI
    from rich.console import Console

    base_url, api_key = gateway(args.base_url, args.api_key, dict(os.environ))
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=1, timeout=120)
    chat = Chat(client, base_url, args.model, args.conversation, Console(highlight=False, soft_wrap=True))
    if args.message is not None:
        return one_shot(chat, args.message)
    if not sys.stdin.isatty():
        return one_shot(chat, sys.stdin.read())
    return interactive(chat)


if __name__ == "__main__":
    raise SystemExit(main())
