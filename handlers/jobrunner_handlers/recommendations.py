"""generate_recommendations: rank catalog products for a user from their latest analyses.

The scoring is meant to be read and explained to a user:

* an area is *weak* when its score in the user's latest glow or style analysis is under the
  threshold (70 by default); its weight is how far under: threshold - score (the lower of the two
  analyses counts when both score it);
* a product scores the sum of the weights of the weak areas it targets, plus a bonus of
  SKIN_TYPE_BONUS when it lists the user's skin type;
* ties go to the higher rating, then the SKU; the top N are written.

Each written row carries its `reasons` (area, its score, the points it gave). Products recommended
to the user in the last days from *other* analyses are left out, so new analyses bring new
products. A run writes the set for its basis (the ids of the analyses it used): running again
for the same analyses rewrites the same rows.

analyze_image enqueues it as a dependent of the analysis job (a job flow): it reads that
analysis from `ctx.parents()` and names it in its result (`requested_by`); it computes from the
user's latest analyses all the same, so a job enqueued on its own behaves the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from jobrunner import JobContext, ParentJob, handler
from jobrunner_handlers.queries import sql
from jobrunner_handlers.settings import app_settings

SKIN_TYPE_BONUS = 5.0


class RecommendationsPayload(BaseModel):
    user_id: UUID
    # default: the plugin's recommendations_count
    limit: int | None = Field(default=None, ge=1, le=100)


@dataclass(frozen=True)
class Product:
    id: UUID
    sku: str
    target_areas: Sequence[str]
    skin_types: Sequence[str] = ()
    rating: float | None = None


@dataclass(frozen=True)
class Recommendation:
    product: Product
    score: float
    reasons: list[dict[str, Any]] = field(default_factory=list)


def weak_areas(area_scores: Iterable[Mapping[str, Any]], threshold: float) -> dict[str, float]:
    """area -> lowest score under the threshold, across the analyses given."""
    lowest: dict[str, float] = {}
    for scores in area_scores:
        for area, value in scores.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue  # a malformed entry is ignored, not guessed at
            if value < threshold:
                lowest[area] = min(value, lowest.get(area, value))
    return lowest


def rank_products(
    products: Iterable[Product],
    weak: Mapping[str, float],
    threshold: float,
    skin_type: str | None,
    limit: int,
) -> list[Recommendation]:
    ranked: list[Recommendation] = []
    for product in products:
        reasons: list[dict[str, Any]] = []
        score = 0.0
        for area in sorted(set(product.target_areas) & weak.keys()):
            points = round(threshold - weak[area], 2)
            score += points
            reasons.append({"area": area, "area_score": weak[area], "points": points})
        if not reasons:
            continue
        if skin_type and skin_type in product.skin_types:
            score += SKIN_TYPE_BONUS
            reasons.append({"skin_type": skin_type, "points": SKIN_TYPE_BONUS})
        ranked.append(Recommendation(product, round(score, 2), reasons))
    ranked.sort(key=lambda r: (-r.score, -(r.product.rating or 0.0), r.product.sku))
    return ranked[:limit]


def basis_of(analysis_ids: Sequence[tuple[str, UUID]]) -> str:
    """A stable name for the analyses a set was computed from."""
    text = "|".join(f"{kind}:{analysis_id}" for kind, analysis_id in sorted(analysis_ids))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def analyses_waited_for(parents: Iterable[ParentJob]) -> list[str]:
    """The analyses (their ids) of the analyze_image jobs this job waited for: the job flow
    analyze_image enqueues it in."""
    return [
        str(parent.result["analysis_id"])
        for parent in parents
        if parent.job_type == "analyze_image"
        and parent.status == "completed"
        and isinstance(parent.result, dict)
        and parent.result.get("analysis_id")
    ]


@handler("generate_recommendations", payload_model=RecommendationsPayload, timeout=60)
async def generate_recommendations(ctx: JobContext[RecommendationsPayload]) -> dict[str, Any]:
    settings = app_settings()
    # enqueued by analyze_image, it waited for that job: which analysis it was asked for
    # (empty for a job enqueued on its own, e.g. from SQL)
    requested_by = analyses_waited_for(await ctx.parents())
    user_id = ctx.payload.user_id
    limit = ctx.payload.limit or settings.recommendations_count
    threshold = settings.weak_area_threshold
    async with ctx.transaction() as conn:
        # concurrent runs for one user would each compute from a different snapshot
        await conn.execute(sql("user_lock"), f"recommendations:{user_id}")
        analyses = await conn.fetch(sql("latest_analyses"), user_id)
        if not analyses:
            return {"user_id": str(user_id), "recommended": 0, "reason": "the user has no analyses"}
        used = {str(row["id"]) for row in analyses}
        superseded = [analysis_id for analysis_id in requested_by if analysis_id not in used]
        if superseded:
            # a newer analysis of the same kind came since: the set is computed from the latest
            ctx.log.info("analysis superseded by a newer one", analyses=superseded)
        basis = basis_of([(row["kind"], row["id"]) for row in analyses])
        weak = weak_areas((json.loads(row["area_scores"]) for row in analyses), threshold)
        skin_type = await conn.fetchval(sql("profile_skin_type"), user_id)
        rows = await conn.fetch(
            sql("recommendation_candidates"), user_id, sorted(weak), basis, settings.recommendations_exclude_days
        )
        products = [Product(r["id"], r["sku"], r["target_areas"], r["skin_types"], r["rating"]) for r in rows]
        ranked = rank_products(products, weak, threshold, skin_type, limit)
        product_ids = [r.product.id for r in ranked]
        await conn.execute(
            sql("upsert_recommendations"),
            user_id,
            basis,
            product_ids,
            list(range(1, len(ranked) + 1)),
            [Decimal(str(r.score)) for r in ranked],
            [json.dumps(r.reasons) for r in ranked],
            [row["id"] for row in analyses],
            ctx.job.id,
        )
        removed = await conn.execute(sql("delete_stale_recommendations"), user_id, basis, product_ids)
    ctx.log.info("recommendations written", user_id=str(user_id), recommended=len(ranked), weak_areas=sorted(weak))
    return {
        "user_id": str(user_id),
        "basis": basis,
        "recommended": len(ranked),
        "weak_areas": weak,
        "products": [r.product.sku for r in ranked],
        "replaced": int(removed.split()[-1]),
        "requested_by": requested_by,
    }
