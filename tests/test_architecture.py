"""The import rules cover every server module: a module the layers contract does not name
would escape `lint-imports` (which checks only the modules a contract lists)."""

from __future__ import annotations

import ast
import re
import tomllib

from tests.conftest import ROOT


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (server,) = [c for c in contracts if c["id"] == "server-layers"]
    return {name.strip() for layer in server["layers"] for name in re.split(r"[|:]", layer)}


def test_every_server_module_sits_in_a_layer() -> None:
    layered = _layered()
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "server").rglob("*.py")
        if p.name != "__init__.py"
    }
    assert len(modules) > 30
    unplaced = sorted(
        m for m in modules if not any(m == n or m.startswith(n + ".") for n in layered)
    )
    assert unplaced == [], f"add these to a layer in pyproject.toml's server-layers: {unplaced}"
    stale = sorted(n for n in layered if not any(m == n or m.startswith(n + ".") for m in modules))
    assert stale == [], f"layers name modules that do not exist: {stale}"


def test_room_packages_import_only_their_own_modules() -> None:
    """A room's ``__init__.py`` runs before any of its modules, and no contract names it, so
    an import there from another room would slip past lint-imports (and can make a cycle)."""
    checked = 0
    for init in (ROOT / "server").rglob("__init__.py"):
        package = ".".join(init.relative_to(ROOT).parent.parts)
        tree = ast.parse(init.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name == "server" or name.startswith("server."):
                    assert name.startswith(package + "."), f"{init}: imports {name}"
        checked += 1
    assert checked >= 7
