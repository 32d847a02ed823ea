"""The layers hold: stages import only upstream stages and ``ncf.io`` (trace_eval -> model -> quant ->
hw -> rtl_tests); the studies and the CLI sit above them; no module imports itself back in a circle.
Read from the source (every import, also those inside functions)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"ncf": REPO / "ncf", "ncf.trace_eval": REPO / "trace_eval", "ncf.model": REPO / "model",
            "ncf.quant": REPO / "quant", "ncf.hw": REPO / "hw", "ncf.rtl_tests": REPO / "rtl_tests"}
LAYERS = ["ncf", "ncf.io", "ncf.trace_eval", "ncf.model", "ncf.quant", "ncf.hw", "ncf.rtl_tests", "ncf.studies",
          "ncf.cli"]


def modules() -> dict[str, Path]:
    out = {}
    for pkg, root in PACKAGES.items():
        for f in root.rglob("*.py"):
            parts = f.relative_to(root).with_suffix("").parts
            out[".".join([pkg, *parts]).removesuffix(".__init__")] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def layer(module: str) -> int:
    return max(k for k, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def test_stages_import_only_upstream_stages_and_io():
    mods = modules()
    assert {"ncf.io", "ncf.cli", "ncf.studies.cache", "ncf.model.train", "ncf.rtl_tests.sim"} <= set(mods)
    bad = [f"{a} -> {b}" for a, p in mods.items() for b in imports(a, p, set(mods))
           if layer(b) > layer(a) or (layer(a) < LAYERS.index("ncf.studies") and layer(b) == 0 and b != "ncf")]
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_module_imports_itself_back():
    mods = modules()
    graph = {a: imports(a, p, set(mods)) for a, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(cycles)
