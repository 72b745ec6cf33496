"""GraphQL documents: the operation name, and the answer cut to the fields the query asks for.

Arguments, variables and directives are skipped; only the shape of the answer matters here."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple


_OPERATION_RE = re.compile(r"\b(query|mutation)\s+([A-Za-z_][A-Za-z0-9_]*)")


_TOKEN_RE = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\]|\\.)*"|\.\.\.|[A-Za-z_][A-Za-z0-9_]*'
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[{}()\[\]:!$=@,]|#[^\n]*|\s+"
)


class _Selection:
    """A parsed GraphQL selection set: fields, inline fragments and fragment spreads."""

    def __init__(self) -> None:
        # ("field", key, name, child) | ("inline", type, child) | ("spread", name)
        self.items: List[Tuple[Any, ...]] = []


def _tokens(text: str) -> List[str]:
    out = []
    for tok in _TOKEN_RE.findall(text or ""):
        if tok.isspace() or tok == "," or tok.startswith("#"):
            continue
        out.append(tok)
    return out


def _parse_document(text: str) -> Tuple[Optional[_Selection], Dict[str, _Selection]]:
    """Parse ``text`` into (the operation's selection, named fragments).

    Arguments, variables and directives are skipped; only the shape of the answer
    matters here. Returns ``(None, {})`` when the text cannot be parsed.
    """
    toks = _tokens(text)
    pos = 0
    fragments: Dict[str, _Selection] = {}
    operation: Optional[_Selection] = None

    def skip_balanced(open_: str, close: str) -> None:
        nonlocal pos
        depth = 0
        while pos < len(toks):
            if toks[pos] == open_:
                depth += 1
            elif toks[pos] == close:
                depth -= 1
                if depth == 0:
                    pos += 1
                    return
            pos += 1

    def skip_directives() -> None:
        nonlocal pos
        while pos < len(toks) and toks[pos] == "@":
            pos += 2
            if pos < len(toks) and toks[pos] == "(":
                skip_balanced("(", ")")

    def selection() -> _Selection:
        nonlocal pos
        sel = _Selection()
        pos += 1  # "{"
        while pos < len(toks) and toks[pos] != "}":
            if toks[pos] == "...":
                pos += 1
                if toks[pos] == "on":
                    type_name = toks[pos + 1]
                    pos += 2
                    skip_directives()
                    sel.items.append(("inline", type_name, selection()))
                elif toks[pos] in ("{", "@"):
                    skip_directives()
                    sel.items.append(("inline", None, selection()))
                else:
                    sel.items.append(("spread", toks[pos]))
                    pos += 1
                    skip_directives()
                continue
            name = toks[pos]
            key = name
            pos += 1
            if pos < len(toks) and toks[pos] == ":":
                name = toks[pos + 1]
                pos += 2
            if pos < len(toks) and toks[pos] == "(":
                skip_balanced("(", ")")
            skip_directives()
            child = selection() if pos < len(toks) and toks[pos] == "{" else None
            sel.items.append(("field", key, name, child))
        pos += 1  # "}"
        return sel

    try:
        while pos < len(toks):
            tok = toks[pos]
            if tok == "fragment":
                name = toks[pos + 1]
                pos += 4  # fragment NAME on TYPE
                skip_directives()
                fragments[name] = selection()
            elif tok in ("query", "mutation", "subscription") or tok == "{":
                while toks[pos] != "{":
                    if toks[pos] == "(":
                        skip_balanced("(", ")")
                    else:
                        pos += 1
                sel = selection()
                operation = operation or sel
            else:
                pos += 1
    except IndexError:
        return None, {}
    return operation, fragments


def _project(value: Any, sel: Optional[_Selection], fragments: Dict[str, _Selection]) -> Any:
    """Keep only the fields ``sel`` asks for (strict clients reject extra fields)."""
    if sel is None or value is None:
        return value
    if isinstance(value, list):
        return [_project(v, sel, fragments) for v in value]
    if not isinstance(value, dict):
        return value
    out: Dict[str, Any] = {}
    typename = value.get("__typename")
    for item in sel.items:
        if item[0] == "field":
            _, key, name, child = item
            if key in value:
                raw = value[key]
            elif name == "__typename":
                raw = typename
            else:
                raw = value.get(name)
            projected = _project(raw, child, fragments)
            if isinstance(out.get(key), dict) and isinstance(projected, dict):
                out[key].update(projected)
            else:
                out[key] = projected
        else:
            if item[0] == "inline":
                if item[1] is not None and typename is not None and item[1] != typename:
                    continue
                inner = item[2]
            else:
                inner = fragments.get(item[1])
                if inner is None:
                    continue
            for k, v in _project(value, inner, fragments).items():
                if isinstance(out.get(k), dict) and isinstance(v, dict):
                    out[k].update(v)
                else:
                    out[k] = v
    return out


def _operation_name(query: str, declared: Optional[str]) -> str:
    if declared:
        return declared
    match = _OPERATION_RE.search(query or "")
    if match:
        return match.group(2)
    return "anonymous"
