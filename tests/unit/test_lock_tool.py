"""tools/lock.py's comparison: locks are compared as sets of pins and hashes, never as text."""

from __future__ import annotations

from tools.lock import differences, pins

H1, H2, H3 = ("sha256:" + c * 64 for c in "abc")


def lock(*entries: tuple[str, str, tuple[str, ...]], comment: str = "") -> str:
    out = [f"# {comment}"] if comment else []
    for name, version, hashes in entries:
        out.append(f"{name}=={version} \\")
        out += [f"    --hash={h} \\" for h in hashes[:-1]] + [f"    --hash={hashes[-1]}", "    # via -r x.in"]
    return "\n".join(out) + "\n"


def test_order_comments_and_name_spelling_do_not_matter():
    a = lock(("Typing_Extensions", "4.16.0", (H1, H2)), ("fastapi", "0.165.0", (H3,)), comment="make lock")
    b = lock(("fastapi", "0.165.0", (H3,)), ("typing-extensions", "4.16.0", (H2, H1)))
    assert pins(a)["typing-extensions"] == ("4.16.0", frozenset({H1, H2}))
    assert differences(a, b) == []


def test_a_changed_pin_hash_addition_or_removal_is_reported():
    old = lock(("fastapi", "0.165.0", (H1,)), ("tenacity", "9.2.1", (H2,)))
    assert differences(old, lock(("fastapi", "0.166.0", (H1,)), ("tenacity", "9.2.1", (H2,)))) == [
        "  ~ fastapi: lock 0.165.0, inputs resolve to 0.166.0"
    ]
    assert differences(old, lock(("fastapi", "0.165.0", (H3,)), ("tenacity", "9.2.1", (H2,)))) == [
        "  ~ fastapi==0.165.0: hashes differ from the index's"
    ]
    assert differences(old, lock(("fastapi", "0.165.0", (H1,)))) == ["  - tenacity==9.2.1 (no longer required)"]
    grown = lock(("fastapi", "0.165.0", (H1,)), ("tenacity", "9.2.1", (H2,)), ("rich", "15.0.0", (H3,)))
    assert differences(old, grown) == ["  + rich==15.0.0 (missing from the lock)"]
