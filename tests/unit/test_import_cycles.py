"""No import cycle in the package: import-linter's layer contracts (pyproject.toml, run by `make test`)
forbid upward imports between layers; this forbids cycles inside a layer too."""

from __future__ import annotations

import grimp


def test_the_package_has_no_import_cycle():
    graph = grimp.build_graph("llm_gateway", exclude_type_checking_imports=True)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == 1:
                cycles.append(path[path.index(imported) :] + [imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph.modules):
        if module not in state:
            visit(module, [module])
    assert cycles == []
