"""Each module of reasonseg sits above what it uses: the imports between its modules (at the top or inside
functions, read from the source with `ast`) form no cycle."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reasonseg"


def module_imports() -> dict[str, set[str]]:
    """Module name -> the reasonseg modules it imports (`from .x import y` counts x, and x.y when y is a module)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges = {name: set() for name in files}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            edges[name] |= {t for t in targets if t in files and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_walk_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    edges = module_imports()
    assert "reasonseg.metrics.stats" in edges["reasonseg.metrics.report"]      # the walk sees real imports
    assert cycles(edges) == []
    # The layers the untangling set, one way each: the reader and the scorer never import the sandbox that runs
    # them (the caller picks it through `Limits.sandbox`), typed errors sit above the text they show.
    for lower, upper in (("reasonseg.submission", "reasonseg.sandbox"),
                         ("reasonseg.metrics.scoring", "reasonseg.sandbox"),
                         ("reasonseg.metrics.scoring", "reasonseg.metrics.drift"),
                         ("reasonseg.text", "reasonseg.errors"),
                         ("reasonseg.metrics.comparison", "reasonseg.metrics.tables")):
        assert upper not in edges[lower] and lower in edges[upper], (lower, upper)
