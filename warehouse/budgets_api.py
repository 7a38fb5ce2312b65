"""The budgets API: list, create, change and delete budgets at run time.

Changes go to the compacted budgets topic; the streams ledger and every relay's hard gate apply
them from there. Each budget comes back with its current period's use and the pace it is on.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import ValidationError

from streams.budget_registry import BudgetRegistry
from streams.budgets import Budget

router = APIRouter(prefix="/api/budgets")


def current_registry(request: Request) -> BudgetRegistry:
    registry: BudgetRegistry = request.app.state.budgets
    return registry


RegistryDep = Annotated[BudgetRegistry, Depends(current_registry)]


def _validated(body: dict[str, Any], budget_id: str) -> Budget:
    try:
        return Budget.model_validate({**body, "id": budget_id})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'budget'}: {e['msg']}" for e in exc.errors()
        )
        raise HTTPException(status_code=422, detail=f"invalid budget: {problems}") from exc


@router.get("")
async def list_budgets(registry: RegistryDep, tenant: str | None = None) -> dict[str, Any]:
    budgets = [b for b in registry.book if tenant is None or b.scope.tenant in (tenant, None)]
    return {"budgets": [registry.view(b) for b in sorted(budgets, key=lambda b: b.id)]}


@router.get("/{budget_id}")
async def get_budget(registry: RegistryDep, budget_id: str) -> dict[str, Any]:
    budget = registry.book.get(budget_id)
    if budget is None:
        raise HTTPException(status_code=404, detail=f"no budget {budget_id!r}")
    return registry.view(budget)


@router.post("", status_code=201)
async def create_budget(registry: RegistryDep, body: dict[str, Any]) -> dict[str, Any]:
    budget_id = body.pop("id", None) or f"b-{uuid.uuid4().hex[:16]}"
    if not isinstance(budget_id, str) or registry.book.get(budget_id) is not None:
        raise HTTPException(status_code=409, detail=f"a budget {budget_id!r} already exists")
    budget = await registry.put(_validated(body, budget_id))
    return registry.view(budget)


@router.put("/{budget_id}")
async def replace_budget(
    registry: RegistryDep, budget_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    if registry.book.get(budget_id) is None:
        raise HTTPException(status_code=404, detail=f"no budget {budget_id!r}")
    if body.pop("id", budget_id) != budget_id:
        raise HTTPException(status_code=422, detail="the body's id differs from the URL's")
    budget = await registry.put(_validated(body, budget_id))
    return registry.view(budget)


@router.delete("/{budget_id}", status_code=204)
async def delete_budget(registry: RegistryDep, budget_id: str) -> Response:
    if registry.book.get(budget_id) is None:
        raise HTTPException(status_code=404, detail=f"no budget {budget_id!r}")
    await registry.delete(budget_id)
    return Response(status_code=204)
