"""The layout rule: the core never imports a scenario, scenarios never import each other, and no module imports
another module's private names. Checked on the source (every import statement, also those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmhelpers"
SCENARIOS = PACKAGE / "scenarios"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every import in the file."""
    out = []
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_layout_has_a_core_and_three_scenarios() -> None:
    scenarios = {p.name for p in SCENARIOS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert scenarios >= {"av_digits", "image_text", "mini_vlm"}
    tests = {p.stem for p in (Path(__file__).parent / "scenarios").glob("test_*.py")}
    for name in scenarios:  # tests mirror the layout: tests/scenarios/test_<scenario>*.py
        assert any(t.startswith(f"test_{name}") for t in tests), f"no tests/scenarios/test_{name}*.py"
    assert _imports(SCENARIOS / "av_digits" / "recipe.py")  # the checker sees imports at all


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_import_rules(path: Path) -> None:
    here = _module(path)
    scenario = here.split(".")[2] if here.startswith("mmhelpers.scenarios.") else None
    for module, names, line in _imports(path):
        where = f"{path.relative_to(PACKAGE.parent)}:{line}"
        if module.startswith("mmhelpers.scenarios.") or (module == "mmhelpers.scenarios" and names):
            target = module.split(".")[2] if module.count(".") >= 2 else names[0]
            assert scenario is not None, f"{where}: the core imports scenario {module}"
            assert target == scenario, f"{where}: scenario {scenario} imports scenario {target}"
        if module.startswith("mmhelpers"):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not private, f"{where}: imports private names {private} from {module}"


def test_the_package_exports_resolve_to_their_modules() -> None:
    import importlib

    import mmhelpers

    for name in mmhelpers.__all__:
        value = getattr(mmhelpers, name)
        if name in mmhelpers._LAZY:  # the lazy table names the module that defines it
            assert value is getattr(importlib.import_module(f"mmhelpers.{mmhelpers._LAZY[name]}"), name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mmhelpers.nope  # noqa: B018
