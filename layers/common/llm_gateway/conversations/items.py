"""OpenAI conversation items, and their conversion to and from stored chat messages.

The store keeps chat messages (``role``, ``content``, ``tool_calls``, ``tool_call_id``), one
DynamoDB item each; the Conversations and Responses APIs show them as OpenAI items:

* a user/system/developer message -> ``message`` with ``input_text`` / ``input_image`` parts
* an assistant message            -> ``message`` with ``output_text`` (``annotations: []``) /
  ``refusal`` parts, then one ``function_call`` item per entry of its ``tool_calls``
* a ``tool`` message              -> ``function_call_output``

and back (:func:`items_to_messages`): function calls that follow an assistant message (or
each other) join that assistant message's ``tool_calls``, as Chat Completions requires.
Anything one side cannot represent is an :class:`InvalidRequest` naming the field, never a
silent drop.

Item ids come from :mod:`llm_gateway.conversations.ids` (``id_for`` below).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from llm_gateway.errors import InvalidRequest

ItemStatus = Literal["in_progress", "completed", "incomplete"]
MessageRole = Literal["user", "assistant", "system", "developer"]
ImageDetail = Literal["low", "high", "auto", "original"]
MAX_ITEMS_PER_REQUEST = 20

# --------------------------------------------------------------------------- item models (output)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputTextPart(_Strict):
    type: Literal["input_text"] = "input_text"
    text: StrictStr


class OutputTextPart(_Strict):
    type: Literal["output_text"] = "output_text"
    text: StrictStr
    annotations: list[dict[str, Any]] = Field(default_factory=list, max_length=0)


class InputImagePart(_Strict):
    type: Literal["input_image"] = "input_image"
    image_url: StrictStr
    detail: ImageDetail = "auto"


class RefusalPart(_Strict):
    type: Literal["refusal"] = "refusal"
    refusal: StrictStr


ContentPart = Annotated[InputTextPart | OutputTextPart | InputImagePart | RefusalPart, Field(discriminator="type")]


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    id: str
    role: MessageRole
    status: ItemStatus = "completed"
    content: list[ContentPart]


class FunctionCallItem(_Strict):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: StrictStr
    name: StrictStr
    arguments: StrictStr
    status: ItemStatus = "completed"


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"] = "function_call_output"
    id: str
    call_id: StrictStr
    output: StrictStr
    status: ItemStatus = "completed"


Item = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]
ITEM_TYPES: tuple[str, ...] = ("message", "function_call", "function_call_output")


# --------------------------------------------------------------------------- input items (requests)


class InputMessage(_Strict):
    """A message as a client sends it: string content or content parts; ``id``/``status`` of an
    item read back from us are accepted and ignored (a new item gets a new id)."""

    type: Literal["message"] = "message"
    role: MessageRole
    content: StrictStr | list[dict[str, Any]]
    id: StrictStr | None = None
    status: ItemStatus | None = None


class InputFunctionCall(_Strict):
    type: Literal["function_call"] = "function_call"
    call_id: StrictStr = Field(min_length=1)
    name: StrictStr = Field(min_length=1)
    arguments: StrictStr
    id: StrictStr | None = None
    status: ItemStatus | None = None


class InputFunctionCallOutput(_Strict):
    type: Literal["function_call_output"] = "function_call_output"
    call_id: StrictStr = Field(min_length=1)
    output: StrictStr
    id: StrictStr | None = None
    status: ItemStatus | None = None


InputItem = InputMessage | InputFunctionCall | InputFunctionCallOutput
_INPUT_MODELS: dict[str, type[InputMessage] | type[InputFunctionCall] | type[InputFunctionCallOutput]] = {
    "message": InputMessage,
    "function_call": InputFunctionCall,
    "function_call_output": InputFunctionCallOutput,
}
_PART_MODELS: dict[str, type[InputTextPart] | type[OutputTextPart] | type[InputImagePart] | type[RefusalPart]] = {
    "input_text": InputTextPart,
    "output_text": OutputTextPart,
    "input_image": InputImagePart,
    "refusal": RefusalPart,
}
_PARTS_BY_ROLE: dict[str, tuple[str, ...]] = {
    "assistant": ("output_text", "refusal"),
    "user": ("input_text", "input_image"),
    "system": ("input_text",),
    "developer": ("input_text",),
}


def _field_error(exc: ValidationError, param: str) -> InvalidRequest:
    """An InvalidRequest naming the first offending field (never echoing its value)."""
    first = exc.errors()[0]
    for part in first.get("loc", ()):
        if isinstance(part, int):
            param += f"[{part}]"
        elif "[" in str(part) or str(part) in ("str", "list", "dict"):
            break  # a union member's name, not a field
        else:
            param += f".{part}"
    kind = first.get("type")
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unrecognized parameter: '{param}'.", param=param)
    return InvalidRequest(f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param)


def _kind(raw: Any, param: str, supported: Sequence[str], default: str | None, what: str) -> str:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"Invalid value for '{param}': expected an object.", param=param)
    kind = raw.get("type", default)
    if kind not in supported:
        shown = kind if isinstance(kind, str) and len(kind) <= 64 else "?"
        raise InvalidRequest(
            f"Unsupported {what} type '{shown}' at '{param}.type'; supported: {', '.join(supported)}.",
            param=f"{param}.type",
        )
    return str(kind)


def parse_items(raw: Any, param: str = "items", *, max_items: int | None = MAX_ITEMS_PER_REQUEST) -> list[InputItem]:
    """Validate a client's list of input items (Conversations ``items``, Responses ``input``)."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"Invalid value for '{param}': expected an array of items.", param=param)
    if max_items is not None and len(raw) > max_items:
        raise InvalidRequest(f"'{param}' may hold at most {max_items} items; got {len(raw)}.", param=param)
    items: list[InputItem] = []
    for index, entry in enumerate(raw):
        where = f"{param}[{index}]"
        default = "message" if isinstance(entry, dict) and "role" in entry else None
        kind = _kind(entry, where, ITEM_TYPES, default, "item")
        try:
            item = _INPUT_MODELS[kind].model_validate(entry)
        except ValidationError as exc:
            raise _field_error(exc, where) from None
        if isinstance(item, InputMessage) and isinstance(item.content, list):
            _parse_parts(item.content, item.role, f"{where}.content")
        items.append(item)
    return items


def _parse_parts(raw: list[Any], role: str, param: str) -> list[ContentPart]:
    allowed = _PARTS_BY_ROLE[role]
    parts: list[ContentPart] = []
    for index, entry in enumerate(raw):
        where = f"{param}[{index}]"
        kind = _kind(entry, where, allowed, None, f"content part for role '{role}'")
        if kind == "input_image" and entry.get("image_url") is None and "file_id" in entry:
            raise InvalidRequest(
                f"'{where}.file_id' is not supported: this gateway has no file store; send 'image_url'.",
                param=f"{where}.file_id",
            )
        try:
            parts.append(_PART_MODELS[kind].model_validate(entry))
        except ValidationError as exc:
            raise _field_error(exc, where) from None
    return parts


# --------------------------------------------------------------------------- items -> chat messages


@dataclass
class ConvertedMessage:
    body: dict[str, Any]  # the chat message as the store keeps it
    first_item: int  # index of the first input item it came from (for error params)


def _chat_content(parts: list[ContentPart]) -> str | list[dict[str, Any]] | None:
    texts = [p.text for p in parts if isinstance(p, InputTextPart | OutputTextPart)]
    if len(texts) == len(parts):
        return texts[0] if len(texts) == 1 else ([{"type": "text", "text": t} for t in texts] or None)
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, InputImagePart):
            image: dict[str, Any] = {"url": part.image_url}
            if part.detail != "auto":
                image["detail"] = part.detail
            out.append({"type": "image_url", "image_url": image})
        elif isinstance(part, InputTextPart | OutputTextPart):
            out.append({"type": "text", "text": part.text})
    return out or None


def items_to_messages(items: Sequence[InputItem], param: str = "items") -> list[ConvertedMessage]:
    """Chat messages for parsed input items, in order (function calls join their assistant message)."""
    out: list[ConvertedMessage] = []
    for index, item in enumerate(items):
        if isinstance(item, InputFunctionCall):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = out[-1].body if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append(ConvertedMessage({"role": "assistant", "content": None, "tool_calls": [call]}, index))
            continue
        if isinstance(item, InputFunctionCallOutput):
            out.append(ConvertedMessage({"role": "tool", "tool_call_id": item.call_id, "content": item.output}, index))
            continue
        if isinstance(item.content, str):
            body: dict[str, Any] = {"role": item.role, "content": item.content}
        else:
            parts = _parse_parts(item.content, item.role, f"{param}[{index}].content")
            body = {"role": item.role, "content": _chat_content(parts)}
            refusals = [p.refusal for p in parts if isinstance(p, RefusalPart)]
            if refusals:
                body["refusal"] = "\n".join(refusals)
        out.append(ConvertedMessage(body, index))
    for converted in out:
        body = converted.body
        if body["role"] == "assistant" and body.get("content") is None and "tool_calls" not in body:
            body["content"] = ""
    return out


# --------------------------------------------------------------------------- chat messages -> items

IdFor = Callable[[str, str | None], str]
"""``id_for(kind, call_id)``: the id of the item of ``kind`` (``msg``/``fc``/``fco``) a message yields."""

_CHAT_KEYS: dict[str, frozenset[str]] = {
    "user": frozenset({"role", "content"}),
    "system": frozenset({"role", "content"}),
    "developer": frozenset({"role", "content"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    # a reply carries provider extras (annotations, audio ids, reasoning …): shown as far as items can
    "assistant": frozenset({"role", "content", "tool_calls", "refusal"}),
}


def _text_parts(content: Any, role: str, param: str) -> list[ContentPart]:
    if content is None:
        return []
    if isinstance(content, str):
        return [OutputTextPart(text=content) if role == "assistant" else InputTextPart(text=content)]
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid value for '{param}.content'.", param=f"{param}.content")
    parts: list[ContentPart] = []
    for index, part in enumerate(content):
        where = f"{param}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(OutputTextPart(text=part["text"]) if role == "assistant" else InputTextPart(text=part["text"]))
        elif kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
            parts.append(RefusalPart(refusal=part["refusal"]))
        elif kind == "image_url" and role == "user" and isinstance(part.get("image_url"), dict):
            image = part["image_url"]
            detail = image.get("detail", "auto")
            if not isinstance(image.get("url"), str) or detail not in ("low", "high", "auto", "original"):
                raise InvalidRequest(f"Invalid value for '{where}.image_url'.", param=f"{where}.image_url")
            parts.append(InputImagePart(image_url=image["url"], detail=detail))
        else:
            shown = kind if isinstance(kind, str) and len(kind) <= 64 else "?"
            raise InvalidRequest(
                f"Content part type '{shown}' for role '{role}' at '{where}.type' cannot be stored in a "
                "conversation (it has no conversation item form).",
                param=f"{where}.type",
            )
    return parts


def message_to_items(
    body: dict[str, Any], id_for: IdFor, *, status: ItemStatus = "completed", param: str = "message"
) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
    """The items a stored chat message is, in order; InvalidRequest naming the field if it has none."""
    role = body.get("role")
    if role not in _CHAT_KEYS:
        shown = role if isinstance(role, str) and len(role) <= 32 else "?"
        raise InvalidRequest(
            f"Role '{shown}' at '{param}.role' cannot be stored in a conversation.", param=f"{param}.role"
        )
    if role != "assistant":
        extra = sorted(k for k in body if k not in _CHAT_KEYS[role])
        if extra:
            raise InvalidRequest(
                f"'{param}.{extra[0]}' cannot be stored in a conversation (conversation items have no such field).",
                param=f"{param}.{extra[0]}",
            )
    if role == "tool":
        content = body.get("content")
        if isinstance(content, list):
            content = "".join(p.text for p in _text_parts(content, "tool", param) if isinstance(p, InputTextPart))
        if not isinstance(content, str) or not isinstance(body.get("tool_call_id"), str):
            raise InvalidRequest(f"A tool message at '{param}' needs a string 'tool_call_id' and content.", param=param)
        call_id = body["tool_call_id"]
        return [FunctionCallOutputItem(id=id_for("fco", call_id), call_id=call_id, output=content, status=status)]
    parts = _text_parts(body.get("content"), role, param)
    out: list[MessageItem | FunctionCallItem | FunctionCallOutputItem] = []
    if role == "assistant":
        refusal = body.get("refusal")
        if isinstance(refusal, str) and not any(isinstance(p, RefusalPart) for p in parts):
            parts.append(RefusalPart(refusal=refusal))
        calls = body.get("tool_calls") or []
        if parts or not calls:
            out.append(MessageItem(id=id_for("msg", None), role="assistant", content=parts, status=status))
        for index, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(function, dict)
                or call.get("type", "function") != "function"
                or not isinstance(call.get("id"), str)
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), str)
            ):
                raise InvalidRequest(
                    f"'{param}.tool_calls[{index}]' cannot be stored in a conversation: only function calls "
                    "with an id, a name and string arguments have an item form.",
                    param=f"{param}.tool_calls[{index}]",
                )
            out.append(
                FunctionCallItem(
                    id=id_for("fc", call["id"]),
                    call_id=call["id"],
                    name=function["name"],
                    arguments=function["arguments"],
                    status=status,
                )
            )
        return out
    return [MessageItem(id=id_for("msg", None), role=role, content=parts, status=status)]


def check_representable(body: dict[str, Any], param: str) -> None:
    """Raise InvalidRequest (naming the field) unless a chat message has an item form."""
    message_to_items(body, lambda kind, call: kind, param=param)
