"""No binary float in any money path: a static check over the modules that touch money."""

from __future__ import annotations

import ast

import pytest

from tests.support import REPO

MONEY_MODULES = [
    "ingest/pricing.py",
    "ingest/price_book.py",
    "ingest/usage_event.py",
    "ingest/alert_event.py",
    "streams/budget_ledger.py",
    "streams/budgets.py",
    "streams/webhook_payloads.py",
    "warehouse/store.py",
    "warehouse/queries.py",
    "warehouse/corrections.py",
    "warehouse/economics.py",
    "warehouse/revenue.py",
    "ingest/loader.py",
    "ingest/history_import.py",
    "tokenops/report_cli.py",
    "warehouse/focus.py",
    "warehouse/export_api.py",
    "tokenops/export_cli.py",
    "tokenops/prices_cli.py",
    "warehouse/monthly_report.py",
    "warehouse/report_api.py",
]


def float_uses(source: str) -> list[str]:
    """Every use of float except `isinstance(x, float)`, which is how floats get refused."""
    tree = ast.parse(source)
    refusals = {
        id(node.args[1])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "isinstance"
        and len(node.args) == 2
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "float" and id(node) not in refusals:
            found.append(f"line {node.lineno}: the name float")
        elif isinstance(node, ast.Constant) and isinstance(node.value, float):
            found.append(f"line {node.lineno}: float literal {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in {"from_float", "__float__"}:
            found.append(f"line {node.lineno}: {node.attr}")
    return found


@pytest.mark.parametrize("module", MONEY_MODULES)
def test_money_modules_never_use_floats(module: str) -> None:
    assert float_uses((REPO / module).read_text()) == []


def test_the_check_catches_a_float() -> None:
    source = "cost = Decimal(x) * 1.5\ntotal = float(cost)\nok = isinstance(v, float)\n"
    assert float_uses(source) == ["line 1: float literal 1.5", "line 2: the name float"]
