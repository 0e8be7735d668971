"""The code's shape, held by a test: what a maintainer can rely on when changing a module.

- no function or method over 60 lines, none nested over 4 blocks deep (if/for/while/with/try/match), in the package,
  its tests, the benchmarks and the scripts;
- no import circle between the package's modules (imports inside functions count too);
- every public function, method, class and module-level name of the package is used by code somewhere in the
  package, bench/ or scripts/ (by name, read from the code's syntax tree: a name in a docstring or a comment is no
  use; the hooks that a library calls by name are listed in ``HOOKS``, the names the configuration files use are
  read from those files); a name only the tests use is dead code.
"""

from __future__ import annotations

import ast
import collections
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "avoviirscollector"
#: where the shape rules on function length and depth hold
SHAPED = (PACKAGE, REPO / "tests", REPO / "bench", REPO / "scripts")
MAX_LINES = 60
MAX_DEPTH = 4
BLOCKS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.Match)
try:
    BLOCKS += (ast.TryStar,)
except AttributeError:  # Python < 3.11
    pass
#: methods that a library calls by their name, not our code
HOOKS = {
    "do_GET", "do_HEAD", "log_message",  # http.server.BaseHTTPRequestHandler
    "make_connection",  # xmlrpc.client.Transport
    "on_event", "on_watch_deleted", "on_queue_overflow",  # watchdog's InotifyFD callback
    "emit",  # logging.Handler
}
#: facts kept for their copies in files that are not code, which tests hold to them
COPIED_FACTS = {
    "INI_PATTERN",  # the file pattern of trollstalker.ini and segment_gatherer.ini (tests/test_viirs.py)
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def depth(node: ast.AST, level: int = 0) -> int:
    """How many blocks deep the body of ``node`` goes (nested functions and classes are measured on their own)."""
    deepest = level
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        deepest = max(deepest, depth(child, level + 1 if isinstance(child, BLOCKS) else level))
    return deepest


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            found |= imported_from(node, package, known)
    found.discard(name)
    return found


def imported_from(node: ast.ImportFrom, package: str, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``from ... import ...`` in ``package`` takes: a module itself or the one it names."""
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in known:
            found.add(f"{base}.{alias.name}")
        elif base in known:
            found.add(base)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_function_is_over_60_lines_or_nested_over_4_blocks():
    """In the package, its tests, the benchmarks and the scripts."""
    long, deep = [], []
    for path in sorted(path for folder in SHAPED for path in folder.rglob("*.py")):
        for node in functions(ast.parse(path.read_text())):
            where = f"{path.relative_to(REPO)}:{node.lineno} {node.name}"
            if node.end_lineno - node.lineno + 1 > MAX_LINES:
                long.append(f"{where} ({node.end_lineno - node.lineno + 1} lines)")
            if depth(node) > MAX_DEPTH:
                deep.append(f"{where} ({depth(node)} deep)")
    assert long == [] and deep == []


def test_the_measures_see_what_they_measure():
    """The checks above find a deep function and a circle when there is one."""
    source = "def f(x):\n" + "".join("    " * level + "if x:\n" for level in range(1, 6)) + "    " * 6 + "pass\n"
    assert depth(functions(ast.parse(source))[0]) == 5
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert sum(len(edges) for edges in graph.values()) > 50  # the graph was read
    assert circles(graph) == []


def used_names(tree: ast.AST) -> collections.Counter:
    """The names a module's code reads: each name loaded and each attribute (an import alone is no use)."""
    used: collections.Counter = collections.Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
            used[node.id] += 1
        elif isinstance(node, ast.Attribute):
            used[node.attr] += 1
    return used


def public_names(tree: ast.Module) -> list[tuple[str, int]]:
    """Functions and methods, and the module's classes and names assigned at its top level, with their lines."""
    names = [(node.name, node.lineno) for node in functions(tree)]
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.append((node.name, node.lineno))
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        names += [(target.id, node.lineno) for target in targets if isinstance(target, ast.Name)]
    return [(name, line) for name, line in names if not name.startswith("_") and name not in HOOKS | COPIED_FACTS]


def test_every_public_name_has_a_use():
    code = [*PACKAGE.rglob("*.py"), *(REPO / "bench").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]
    used: collections.Counter = collections.Counter()
    for path in code:
        used.update(used_names(ast.parse(path.read_text())))
    others = [path for path in (REPO / "scripts").iterdir() if path.is_file() and path.suffix != ".py"]
    others += [REPO / name for name in ("setup.py", "supervisord.conf", "crontab")]
    words = collections.Counter(word for path in others for word in re.findall(r"[A-Za-z_]\w*", path.read_text()))
    defined = [(path, name, line) for path in PACKAGE.rglob("*.py") for name, line in
               public_names(ast.parse(path.read_text()))]
    unused = sorted(f"{path.relative_to(REPO)}:{line} {name}" for path, name, line in defined
                    if not used[name] and not words[name])
    assert len(defined) > 400
    assert unused == []


def test_the_use_check_finds_a_name_only_a_docstring_or_a_test_mentions():
    """The check reads code: a name that only a docstring, a comment or an import mentions is unused."""
    tree = ast.parse('''
"""forgotten() is mentioned here."""
from somewhere import imported
def forgotten():  # forgotten
    return 1
def called():
    return helper.attribute
CONSTANT = called()
''')
    used = used_names(tree)
    assert used["called"] == 1 and used["attribute"] == 1 and used["helper"] == 1
    assert not used["forgotten"] and not used["imported"] and not used["CONSTANT"]
    assert [name for name, _ in public_names(tree)] == ["forgotten", "called", "CONSTANT"]
