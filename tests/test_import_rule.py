"""The house rule: no stage package imports another; stages exchange records and files only.

The stages (`synthesis`, `review`, `training`, `evaluation`, `serving`) sit on shared layers (`schema`,
`engines`, `prompts`, `io`, `checks`, …). Orchestrators (`cli.py`, `demo/`, `progress.py`, …) may import
any stage; nothing under a stage package may import another stage, neither at the top of a module nor
inside a function, absolutely or relatively.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("synthesis", "review", "training", "evaluation", "serving")


def _module_of(path: Path, root: Path) -> list[str]:
    """`editcaption/review/stats.py` → ["editcaption", "review", "stats"] (a package's `__init__` is
    the package itself)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, function-local ones included; a relative
    import is resolved against the file's package, and `from pkg import name` counts as `pkg.name` too
    (the name may be a submodule)."""
    module = _module_of(path, root)
    package = module if path.name == "__init__.py" else module[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "editcaption" and parts[1] in STAGES:
        return parts[1]
    return None


def violations(root: Path = ROOT) -> list[str]:
    """`file:line: <stage> imports <module>` for every import of another stage under the stage packages
    of the tree at `root`."""
    out: dict[tuple[str, int], str] = {}  # one entry per import statement: its first other-stage module
    for stage in STAGES:
        for path in sorted((root / "editcaption" / stage).rglob("*.py")):
            for line, module in imported_modules(path, root):
                other = stage_of(module)
                if other is not None and other != stage:
                    out.setdefault((str(path.relative_to(root)), line), f"{stage} imports {module}")
    return [f"{file}:{line}: {what}" for (file, line), what in sorted(out.items())]


def test_no_stage_imports_another_stage() -> None:
    found = violations()
    assert not found, "stage packages import each other (move the shared piece to a shared layer):\n" + (
        "\n".join(found)
    )


def test_the_walk_sees_local_relative_and_from_imports(tmp_path: Path) -> None:
    """The checker itself, on a small tree: a function-local import, relative ones and a
    `from editcaption import <stage>` are all seen and resolved, so the rule above cannot pass by not
    looking; imports within a stage and of shared layers are allowed."""
    review = tmp_path / "editcaption" / "review"
    review.mkdir(parents=True)
    (review / "__init__.py").write_text("from .store import Store\n")
    (review / "probe.py").write_text(
        "from ..synthesis import job\n"
        "from editcaption import serving\n"
        "from . import store\n"
        "import editcaption.schema\n"
        "def f():\n"
        "    import editcaption.training.sft\n"
        "    from editcaption.evaluation.metrics import mean_ci\n"
        "    from ..prompts import judge\n"
    )
    assert violations(tmp_path) == [
        "editcaption/review/probe.py:1: review imports editcaption.synthesis",
        "editcaption/review/probe.py:2: review imports editcaption.serving",
        "editcaption/review/probe.py:6: review imports editcaption.training.sft",
        "editcaption/review/probe.py:7: review imports editcaption.evaluation.metrics",
    ]
