"""Go ``path.Match`` globs, used for yoke's ``MODULE_ALLOW_LIST``.

``allowed(url, allow_list)`` is what the module cache and the admission webhook
call before fetching a module: an empty list allows everything, otherwise one
glob must match the whole URL. ``path_match`` reproduces Go's ``path.Match``:
``*`` is any run of non-``/`` characters, ``?`` one non-``/`` character,
``[...]`` a class (ranges, ``^`` negation; a class may match ``/``), ``\\``
escapes the next character. A malformed pattern (unclosed ``[``, trailing
``\\``, ``[-]`` ...) matches nothing, as yoke ignores Go's ``ErrBadPattern``.
Like Go, a pattern is checked for well-formedness even after the match fails.
"""

from __future__ import annotations

from collections.abc import Sequence


class _BadPatternError(Exception):
    """Go's ``path.ErrBadPattern``; never escapes this module."""


def allowed(url: str, allow_list: Sequence[str]) -> bool:
    """True when ``allow_list`` is empty or one of its globs matches the full ``url``."""
    return not allow_list or any(path_match(pattern, url) for pattern in allow_list)


def path_match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches the shell glob ``pattern`` exactly as Go's ``path.Match`` decides."""
    try:
        return _match(pattern, name)
    except _BadPatternError:
        return False


def _match(pattern: str, name: str) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing star matches the rest unless it crosses a '/'
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if star:
            rest = _match_after_skipping(chunk, name, is_last=not pattern)
            if rest is not None:
                name = rest
                continue
        _check_remaining_chunks(pattern)
        return False
    return not name


def _match_after_skipping(chunk: str, name: str, *, is_last: bool) -> str | None:
    """Let the star before ``chunk`` swallow 1, 2 ... characters of ``name`` (never a '/')."""
    for skipped in range(len(name)):
        if name[skipped] == "/":
            break
        rest = _match_chunk(chunk, name[skipped + 1 :])
        if rest is not None and not (is_last and rest):
            return rest
    return None


def _check_remaining_chunks(pattern: str) -> None:
    """Raise for a malformed pattern even when the match already failed (Go does the same)."""
    while pattern:
        _, chunk, pattern = _scan_chunk(pattern)
        _match_chunk(chunk, "")


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Split off leading stars and the chunk up to the next star outside a class."""
    stripped = pattern.lstrip("*")
    star = len(stripped) != len(pattern)
    in_class = False
    index = 0
    while index < len(stripped):
        char = stripped[index]
        if char == "\\":
            index += 1  # skip the escaped character; a trailing '\' is reported by _match_chunk
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "*" and not in_class:
            break
        index += 1
    index = min(index, len(stripped))
    return star, stripped[:index], stripped[index:]


def _match_chunk(chunk: str, text: str) -> str | None:
    """Match ``chunk`` (no stars) at the start of ``text``; the unmatched rest, or None.

    After a mismatch the rest of the chunk is still parsed so that bad syntax raises.
    """
    failed = False
    while chunk:
        if not failed and not text:
            failed = True
        head = chunk[0]
        if head == "[":
            char = "" if failed else text[0]
            text = text if failed else text[1:]
            in_class, chunk = _match_class(chunk[1:], char)
            failed = failed or not in_class
        elif head == "?":
            if not failed:
                failed = text[0] == "/"
                text = text[1:]
            chunk = chunk[1:]
        else:
            if head == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise _BadPatternError
            if not failed:
                failed = chunk[0] != text[0]
                text = text[1:]
            chunk = chunk[1:]
    return None if failed else text


def _match_class(chunk: str, char: str) -> tuple[bool, str]:
    """Parse a class body (after '['); whether ``char`` is in it, and the chunk after ']'."""
    negated = chunk.startswith("^")
    if negated:
        chunk = chunk[1:]
    matched = False
    ranges = 0
    while not (chunk.startswith("]") and ranges > 0):
        low, chunk = _class_char(chunk)
        high = low
        if chunk.startswith("-"):
            high, chunk = _class_char(chunk[1:])
        if char and low <= char <= high:
            matched = True
        ranges += 1
    return matched != negated, chunk[1:]


def _class_char(chunk: str) -> tuple[str, str]:
    """One (possibly escaped) class character; a class cannot end right after it."""
    if not chunk or chunk[0] in "-]":
        raise _BadPatternError
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise _BadPatternError
    rest = chunk[1:]
    if not rest:
        raise _BadPatternError
    return chunk[0], rest
