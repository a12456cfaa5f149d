"""The checks a chat turn passes before anything is leased, reserved or written."""

from __future__ import annotations

import json

from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.chat.tokens import TOKENS_PER_REPLY
from llm_gateway.chat.turn import leading_system, system_text
from llm_gateway.conversations.items import check_representable
from llm_gateway.errors import ContextLengthExceeded, InvalidRequest, PayloadTooLarge
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import ModelAlias, Routing


class TurnChecks:
    """Validation of a turn request (ChatService's, also used by the Responses and conversation services)."""

    routing: Routing
    settings: Settings

    def check_sizes(self, request: ChatCompletionRequest) -> None:
        limit = self.settings.max_message_bytes
        for index, message in enumerate(request.messages):
            size = len(json.dumps(message.wire(), ensure_ascii=False).encode())
            if size > limit:
                raise PayloadTooLarge(
                    f"Message {index} is {size} bytes; the limit is {limit} bytes per message.",
                    param=f"messages[{index}]",
                )

    def check_system_size(self, text: str, param: str) -> None:
        """A conversation's system prompt is stored on its head item: bound it like a message."""
        limit = self.settings.max_message_bytes
        size = len(text.encode())
        if size > limit:
            raise PayloadTooLarge(f"The system prompt is {size} bytes; the limit is {limit} bytes.", param=param)

    @staticmethod
    def check_caps(alias: ModelAlias, request: ChatCompletionRequest) -> None:
        """The alias's request caps: ``n`` and the output allowance."""
        if request.n is not None and request.n > alias.max_n:
            raise InvalidRequest(f"'n' may be at most {alias.max_n} for the model '{alias.name}'.", param="n")
        cap = alias.max_output_tokens or alias.context_window
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(request, name)
            if value is not None and value > cap:
                raise InvalidRequest(f"'{name}' may be at most {cap} for the model '{alias.name}'.", param=name)

    def check_count(self, count: int, param: str) -> None:
        """A request's message (or input item) count, checked before anything is counted or sent."""
        limit = self.settings.max_messages_per_request
        if count > limit:
            raise InvalidRequest(f"'{param}' may hold at most {limit} messages; got {count}.", param=param)

    def validate(self, request: ChatCompletionRequest) -> ModelAlias:
        """Everything checkable without the store: a bad request never leases or writes."""
        self.check_count(len(request.messages), "messages")
        alias = self.routing.resolve(request.model)
        self.check_sizes(request)
        self.check_caps(alias, request)
        alias.pass_through.check(request.model_extra or {}, alias.name)  # a rejected provider-side field
        if request.conversation_id is not None:
            if request.n not in (None, 1):
                raise InvalidRequest("'n' must be 1 when 'conversation_id' is given.", param="n")
            if len(request.messages) > self.settings.max_messages_per_turn:
                raise InvalidRequest(
                    f"A turn on a conversation may add at most {self.settings.max_messages_per_turn} messages.",
                    param="messages",
                )
            leading = leading_system(request.messages)
            if len(leading) == len(request.messages):
                raise InvalidRequest("A turn must add at least one non-system message.", param="messages")
            if len(leading) > 1:  # one message is bounded by check_sizes already
                self.check_system_size(system_text(leading), "messages")
            # the conversation is also shown as OpenAI items: what has no item form is refused, not dropped
            for index in range(len(leading), len(request.messages)):
                check_representable(request.messages[index].wire(), f"messages[{index}]")
        return alias

    def history_room(
        self, alias: ModelAlias, request: ChatCompletionRequest, fixed: int, param: str = "messages"
    ) -> int:
        """Tokens left for history once ``fixed`` (the new messages and system prompt) and the
        completion budget are in the context window; a 400 when even they do not fit."""
        hard_cap = alias.context_window - request.completion_budget(self.settings.completion_reserve_tokens)
        room = hard_cap - fixed - TOKENS_PER_REPLY
        if room < 0:
            raise ContextLengthExceeded(
                f"The new messages need {fixed} tokens; the model's context window leaves {hard_cap} "
                "after the completion budget.",
                param=param,
            )
        return room
