"""The budgets API: list, create, change and delete budgets at run time.

Changes go to the compacted budgets topic; the streams ledger and every relay's hard gate apply
them from there. Each budget comes back with its current period's use and the pace it is on.

A viewer sees and writes only budgets whose scope names a tenant it may see; organisation-wide
budgets (no tenant) only a viewer who sees every tenant. A budget the viewer may not see is a 404,
as if it did not exist; writing one for a tenant it may not see is a 403.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import ValidationError

from streams.budget_registry import BudgetRegistry
from streams.budgets import Budget
from warehouse.access import Viewer, ViewerDep

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


def _visible(registry: BudgetRegistry, viewer: Viewer, budget_id: str) -> Budget:
    budget = registry.book.get(budget_id)
    if budget is None or not viewer.may_see(budget.scope.tenant):
        raise HTTPException(status_code=404, detail=f"no budget {budget_id!r}")
    return budget


def _writable(viewer: Viewer, budget: Budget) -> Budget:
    if not viewer.may_see(budget.scope.tenant):
        whose = budget.scope.tenant or "the whole organisation (no tenant)"
        raise HTTPException(status_code=403, detail=f"{viewer.name} may not set budgets of {whose}")
    return budget


@router.get("")
async def list_budgets(
    registry: RegistryDep, viewer: ViewerDep, tenant: str | None = None
) -> dict[str, Any]:
    if tenant is not None:
        viewer.scope(tenant)  # a tenant the viewer may not see is a 403
    budgets = [
        b
        for b in registry.book
        if viewer.may_see(b.scope.tenant) and (tenant is None or b.scope.tenant in (tenant, None))
    ]
    return {"budgets": [registry.view(b) for b in sorted(budgets, key=lambda b: b.id)]}


@router.get("/{budget_id}")
async def get_budget(registry: RegistryDep, viewer: ViewerDep, budget_id: str) -> dict[str, Any]:
    return registry.view(_visible(registry, viewer, budget_id))


@router.post("", status_code=201)
async def create_budget(
    registry: RegistryDep, viewer: ViewerDep, body: dict[str, Any]
) -> dict[str, Any]:
    budget_id = body.pop("id", None) or f"b-{uuid.uuid4().hex[:16]}"
    if not isinstance(budget_id, str):
        raise HTTPException(status_code=422, detail="a budget id is a string")
    budget = _writable(viewer, _validated(body, budget_id))
    if registry.book.get(budget_id) is not None:
        raise HTTPException(status_code=409, detail=f"a budget {budget_id!r} already exists")
    return registry.view(await registry.put(budget))


@router.put("/{budget_id}")
async def replace_budget(
    registry: RegistryDep, viewer: ViewerDep, budget_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    _visible(registry, viewer, budget_id)
    if body.pop("id", budget_id) != budget_id:
        raise HTTPException(status_code=422, detail="the body's id differs from the URL's")
    budget = await registry.put(_writable(viewer, _validated(body, budget_id)))
    return registry.view(budget)


@router.delete("/{budget_id}", status_code=204)
async def delete_budget(registry: RegistryDep, viewer: ViewerDep, budget_id: str) -> Response:
    _visible(registry, viewer, budget_id)
    await registry.delete(budget_id)
    return Response(status_code=204)
