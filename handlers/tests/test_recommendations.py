"""generate_recommendations: the scoring, and idempotent runs through the real daemon."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from handlers.tests.test_schema import ALICE, add_analysis
from jobrunner_handlers.recommendations import Product, generate_recommendations, rank_products, weak_areas
from tests.support import job_row, running_daemon

CATALOG = [
    # sku, target areas, skin types, rating
    ("hydra-serum", ["hydration", "texture"], ["dry"], 4.5),
    ("tone-drops", ["tone"], [], 4.9),
    ("texture-peel", ["texture"], [], 4.0),
    ("glow-mask", ["radiance"], [], 5.0),  # radiance is not weak: never recommended
    ("hydra-cream", ["hydration"], ["oily"], 4.8),
]


def test_scoring_is_the_sum_of_weak_area_points_plus_the_skin_type_bonus() -> None:
    weak = weak_areas([{"hydration": 40, "texture": 65, "radiance": 90}, {"texture": 55, "tone": "n/a"}], 70)
    assert weak == {"hydration": 40, "texture": 55}
    ids = {sku: uuid.uuid4() for sku, *_ in CATALOG}
    products = [Product(ids[sku], sku, areas, skins, rating) for sku, areas, skins, rating in CATALOG]
    ranked = rank_products(products, weak, 70, "dry", limit=10)
    assert [(r.product.sku, r.score) for r in ranked] == [
        ("hydra-serum", 30 + 15 + 5),
        ("hydra-cream", 30),
        ("texture-peel", 15),
    ]
    assert ranked[0].reasons == [
        {"area": "hydration", "area_score": 40, "points": 30},
        {"area": "texture", "area_score": 55, "points": 15},
        {"skin_type": "dry", "points": 5.0},
    ]
    assert [r.product.sku for r in rank_products(products, weak, 70, None, limit=1)] == ["hydra-serum"]


async def seed_catalog(conn: asyncpg.Connection) -> None:
    await conn.executemany(
        "INSERT INTO products (sku, name, category, target_areas, skin_types, rating) "
        "VALUES ($1, $1, 'care', $2, $3, $4)",
        CATALOG,
    )
    await conn.execute("INSERT INTO profiles (id, skin_type) VALUES ($1, 'dry')", ALICE)


async def recommendations(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT r.id, p.sku, r.rank, r.score::float8, r.basis FROM product_recommendations r "
        "JOIN products p ON p.id = r.product_id WHERE r.user_id = $1 ORDER BY r.basis, r.rank",
        ALICE,
    )
    return [tuple(r) for r in rows]


async def run_jobs(db_url: str, conn: asyncpg.Connection, *payloads: dict[str, object]) -> list[dict[str, object]]:
    ids = [
        await conn.fetchval("SELECT enqueue_job('generate_recommendations', $1::jsonb)", json.dumps(p))
        for p in payloads
    ]
    async with running_daemon(db_url, [generate_recommendations], burst=True):
        pass
    return [await job_row(conn, job_id) for job_id in ids]  # type: ignore[misc]


async def test_running_twice_writes_the_same_rows(db_url: str, conn: asyncpg.Connection) -> None:
    await seed_catalog(conn)
    await add_analysis(conn, ALICE, 60, areas={"hydration": 40, "texture": 65, "radiance": 90})
    await add_analysis(conn, ALICE, 62, table="style_analyses", areas={"texture": 55})
    [first] = await run_jobs(db_url, conn, {"user_id": str(ALICE)})
    assert first["status"] == "completed", first["last_error"]
    result = json.loads(first["result"])
    assert result["products"] == ["hydra-serum", "hydra-cream", "texture-peel"]
    assert result["weak_areas"] == {"hydration": 40, "texture": 55}
    written = await recommendations(conn)
    assert [(sku, rank, score) for _, sku, rank, score, _ in written] == [
        ("hydra-serum", 1, 50.0),
        ("hydra-cream", 2, 30.0),
        ("texture-peel", 3, 15.0),
    ]
    # again, twice at once: the same rows (same ids), no duplicates
    second, third = await run_jobs(db_url, conn, {"user_id": str(ALICE)}, {"user_id": str(ALICE)})
    assert second["status"] == third["status"] == "completed"
    assert await recommendations(conn) == written


async def test_new_analyses_leave_out_recently_recommended_products(db_url: str, conn: asyncpg.Connection) -> None:
    await seed_catalog(conn)
    await add_analysis(conn, ALICE, 50, areas={"hydration": 40}, created_at=datetime.now(UTC) - timedelta(days=1))
    await run_jobs(db_url, conn, {"user_id": str(ALICE), "limit": 1})
    assert [sku for _, sku, *_ in await recommendations(conn)] == ["hydra-serum"]
    await add_analysis(conn, ALICE, 55, areas={"hydration": 45, "tone": 30})
    [job] = await run_jobs(db_url, conn, {"user_id": str(ALICE), "limit": 5})
    assert json.loads(job["result"])["products"] == ["tone-drops", "hydra-cream"]


async def test_users_without_analyses_and_bad_payloads(db_url: str, conn: asyncpg.Connection) -> None:
    none, bad = await run_jobs(db_url, conn, {"user_id": str(ALICE)}, {"user_id": "not-a-uuid"})
    assert json.loads(none["result"])["recommended"] == 0
    assert bad["status"] == "failed"
    assert "invalid payload for generate_recommendations: user_id" in bad["last_error"]
