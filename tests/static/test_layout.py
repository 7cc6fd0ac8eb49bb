"""The crate's rooms and the one direction of their dependencies (issue 20's layout).

Each top-level module of `src/` is a room. A room may use only the rooms listed for it in
`ALLOWED`, which orders them from the pure core up to the ABI: a new `use` that points upwards,
or a new room nobody placed, fails here, before it can grow into an import cycle.
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# Bottom to top. `filter` is the per-stream logic over the `host` seam; `abi` is the only room
# that may use everything, and the only one with `unsafe` code.
ALLOWED: dict[str, set[str]] = {
    # The command-line tools (`src/bin/`) use the crate's public `surface`, never its rooms.
    "bin": set(),
    "version": set(),
    "config_error": set(),
    "host": set(),
    "api": set(),
    "accounting": {"api", "config_error"},
    "edge": {"api", "config_error"},
    "fixtures": {"config_error"},
    "mock": {"api", "accounting", "config_error", "fixtures"},
    "translate": {"api", "config_error"},
    "config": {"api", "accounting", "edge", "fixtures", "mock", "translate", "config_error"},
    "filter": {"api", "accounting", "edge", "fixtures", "mock", "translate", "config", "config_error",
               "host"},
    "abi": {"api", "accounting", "edge", "fixtures", "mock", "translate", "config", "config_error", "host",
            "filter", "version"},
}

CRATE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
CRATE_GROUP = re.compile(r"\bcrate::\{")
COMMENT = re.compile(r"//[^\n]*")


def _code(text: str) -> str:
    """The text without comments (doc links are not dependencies) and without its unit tests."""
    text = COMMENT.sub("", text)
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def _group_heads(text: str, start: int) -> list[str]:
    """The first path segment of each item in a `crate::{a::b, c, ...}` group."""
    depth, i, item, heads = 1, start, "", []
    while i < len(text) and depth:
        ch = text[i]
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 1 and ch == ",":
            heads.append(item)
            item = ""
        elif depth >= 1 and not (depth == 1 and ch in "{}"):
            item += ch
        i += 1
    heads.append(item)
    return [m.group(1) for h in heads if (m := re.match(r"\s*([a-z_][a-z0-9_]*)", h))]


def _is_test_file(rel: Path) -> bool:
    return rel.name == "tests.rs" or "tests" in rel.parts[:-1]


def room_graph(src: Path) -> dict[str, set[str]]:
    """Which rooms each room's non-test code names through `crate::`."""
    graph: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if _is_test_file(rel) or rel.name in ("lib.rs", "main.rs"):
            continue
        room = rel.parts[0].removesuffix(".rs")
        code = _code(path.read_text())
        used = set(CRATE_PATH.findall(code))
        for group in CRATE_GROUP.finditer(code):
            used.update(_group_heads(code, group.end()))
        graph.setdefault(room, set()).update(used - {room})
    rooms = set(graph)
    return {room: {used for used in uses if used in rooms} for room, uses in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one room (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_crate_has_no_import_cycle():
    assert cycles(room_graph(SRC)) == []


def test_every_room_uses_only_the_rooms_below_it():
    graph = room_graph(SRC)
    assert set(graph) == set(ALLOWED), "a room was added or removed: place it in ALLOWED"
    upward = {room: sorted(uses - ALLOWED[room]) for room, uses in graph.items() if uses - ALLOWED[room]}
    assert upward == {}


def test_only_the_abi_holds_unsafe_code():
    holders = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.rs")
        if path.relative_to(SRC).parts[0] != "abi" and re.search(r"\bunsafe\b", _code(path.read_text()))
    )
    assert holders == []


def test_the_checks_see_a_cycle_and_an_upward_use(tmp_path):
    # The checker itself must be able to fail: a two-room cycle, through a `use` group.
    (tmp_path / "lib.rs").write_text("mod api;\nmod mock;\n")
    (tmp_path / "api.rs").write_text("use crate::{mock::Reply, api};\n// crate::nothing in a comment\n")
    (tmp_path / "mock").mkdir()
    (tmp_path / "mock" / "mod.rs").write_text("use crate::api::chat;\n")
    (tmp_path / "mock" / "tests.rs").write_text("use crate::filter::Filter;\n")
    graph = room_graph(tmp_path)
    assert graph == {"api": {"mock"}, "mock": {"api"}}
    assert cycles(graph) == [["api", "mock"]]
    assert "mock" not in ALLOWED["api"]
