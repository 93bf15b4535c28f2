"""The code's shape: no import cycles, and every task x optimizer x recipe composes, passes the schema and builds."""

import ast
import itertools
from pathlib import Path

import pytest

from l2lcli.config import build, check, compose, group_choices
from l2lcli.errors import L2LError
from l2lcli.schema import RULES, leaves

PACKAGE = Path(__file__).resolve().parents[1] / "l2lcli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every l2lcli module -> the l2lcli modules it imports anywhere (top level or inside a function)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            targets |= {t for t in found if t in modules and t != name}
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (cycle := visit(nxt)):
                return cycle
        colour[node] = "black"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in colour and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_another_in_a_circle():
    graph = import_graph()
    assert {"l2lcli.config", "l2lcli.tasks.base", "l2lcli.commands.train", "l2lcli.optimizers.learned"} <= set(graph)
    assert "l2lcli.errors" in graph["l2lcli.config"]  # the graph sees the package's own imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


COMBINATIONS = list(itertools.product(group_choices("task"), group_choices("optimizer"), group_choices("recipe")))


@pytest.mark.parametrize("task, optimizer, recipe", COMBINATIONS)
def test_every_task_optimizer_and_recipe_composes_checks_and_builds(task, optimizer, recipe):
    cfg = compose([f"task={task}", f"optimizer={optimizer}", f"recipe={recipe}"])
    assert (cfg.task.name, cfg.optimizer.name, cfg.recipe.name) == (task, optimizer, recipe)
    missing = [path for path, _ in leaves(cfg) if path not in RULES]
    assert not missing, f"keys without a schema rule: {missing}"
    if task not in cfg.recipe.get("tasks", [task]):  # a recipe for some tasks only refuses the others
        with pytest.raises(L2LError, match=f"recipe={recipe} is for task="):
            check(cfg, "evaluate")
        return
    check(cfg, "evaluate")  # every shipped value passes the schema
    if optimizer in ("lstm", "lstm_gac", "ntm_bfgs", "ntm_lbfgs"):
        check(cfg, "meta-train")
    family, rule = build(cfg.task), build(cfg.optimizer)
    assert family.name == task and rule.name == optimizer
    if getattr(rule, "learned", False):  # the groups cover every parameter of the task
        specs = family.specs()
        assert rule.assign([s.name for s in specs], {s.name: s.kind for s in specs})
