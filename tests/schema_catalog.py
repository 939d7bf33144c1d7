"""A database's schema as comparable rows, read from the catalog: two databases built different
ways (a fresh install, the migration path of a change) must give the same snapshot.

Compared: schemas, tables and the other relations (kind, options, row security, partitioning),
columns (position, type, default, nullability, identity, generated), indexes, constraints,
functions (pg_get_functiondef: arguments, result, language, volatility, SECURITY DEFINER, SET
clauses, body), triggers, views, sequences, extensions, privileges (schemas, relations, columns,
functions, default privileges: aclexplode, one row per grant), row security policies, comments,
and the roles all of these name (attributes and memberships). Objects of extensions are left
out; rows of tables are not compared.
"""

from __future__ import annotations

from typing import Any

import asyncpg

# the schemas PostgreSQL itself keeps
_USER_SCHEMAS = """
    SELECT n.oid FROM pg_namespace AS n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""
_NOT_FROM_EXTENSION = """
    NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = {catalog}::regclass AND d.objid = {oid}
                AND d.deptype = 'e')
"""
_GRANTEE = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"
_GRANT_ROW = f"{_GRANTEE}, pg_get_userbyid(a.grantor), a.privilege_type, a.is_grantable"

QUERIES: dict[str, str] = {
    "schemas": f"""
        SELECT n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace AS n WHERE n.oid IN ({_USER_SCHEMAS})
    """,
    "relations": f"""
        SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.reloptions::text,
               c.relrowsecurity, c.relforcerowsecurity, c.relpersistence, c.relispartition,
               pg_get_expr(c.relpartbound, c.oid),
               CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
               (SELECT i.inhparent::regclass::text FROM pg_inherits AS i WHERE i.inhrelid = c.oid)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.oid IN ({_USER_SCHEMAS}) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
          AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
    """,
    "columns": f"""
        SELECT n.nspname, c.relname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attcollation::regcollation::text
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef AS ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE n.oid IN ({_USER_SCHEMAS}) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND a.attnum > 0 AND NOT a.attisdropped
          AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
    """,
    "indexes": f"""
        SELECT n.nspname, c.relname, pg_get_indexdef(x.indexrelid), x.indisunique, x.indisprimary
        FROM pg_index AS x
        JOIN pg_class AS i ON i.oid = x.indexrelid
        JOIN pg_class AS c ON c.oid = x.indrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.oid IN ({_USER_SCHEMAS}) AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
    """,
    "constraints": f"""
        SELECT n.nspname, c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid), k.convalidated,
               k.condeferrable, k.condeferred
        FROM pg_constraint AS k
        JOIN pg_class AS c ON c.oid = k.conrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.oid IN ({_USER_SCHEMAS}) AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
    """,
    "functions": f"""
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_userbyid(p.proowner),
               pg_get_functiondef(p.oid)
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.oid IN ({_USER_SCHEMAS}) AND p.prokind <> 'a'
          AND {_NOT_FROM_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}
    """,
    "triggers": f"""
        SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger AS t
        JOIN pg_class AS c ON c.oid = t.tgrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.oid IN ({_USER_SCHEMAS}) AND NOT t.tgisinternal
    """,
    "views": f"""
        SELECT n.nspname, c.relname, pg_get_viewdef(c.oid), c.relispopulated
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.oid IN ({_USER_SCHEMAS}) AND c.relkind IN ('v', 'm')
          AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
    """,
    "sequences": """
        SELECT s.schemaname, s.sequencename, s.data_type::text, s.start_value, s.min_value, s.max_value,
               s.increment_by, s.cycle, s.cache_size,
               (SELECT d.refobjid::regclass::text || '.' || d.refobjsubid FROM pg_depend AS d
                WHERE d.classid = 'pg_class'::regclass AND d.objid = (quote_ident(s.schemaname) || '.'
                      || quote_ident(s.sequencename))::regclass AND d.deptype IN ('a', 'i'))
        FROM pg_sequences AS s
    """,
    "extensions": """
        SELECT e.extname, n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
    """,
    "schema_grants": f"""
        SELECT n.nspname, {_GRANT_ROW}
        FROM pg_namespace AS n CROSS JOIN LATERAL aclexplode(n.nspacl) AS a
        WHERE n.oid IN ({_USER_SCHEMAS})
    """,
    "relation_grants": f"""
        SELECT n.nspname, c.relname, {_GRANT_ROW}
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        WHERE n.oid IN ({_USER_SCHEMAS})
    """,
    # NULL: the default privileges (the owner's, and none for PUBLIC on tables)
    "relations_with_default_privileges": f"""
        SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.oid IN ({_USER_SCHEMAS}) AND c.relacl IS NULL AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
    """,
    "column_grants": f"""
        SELECT n.nspname, c.relname, at.attname, {_GRANT_ROW}
        FROM pg_attribute AS at
        JOIN pg_class AS c ON c.oid = at.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL aclexplode(at.attacl) AS a
        WHERE n.oid IN ({_USER_SCHEMAS}) AND at.attnum > 0 AND NOT at.attisdropped
    """,
    "function_grants": f"""
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), {_GRANT_ROW}
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        CROSS JOIN LATERAL aclexplode(p.proacl) AS a
        WHERE n.oid IN ({_USER_SCHEMAS})
    """,
    # NULL: the default privileges (the owner and PUBLIC may execute)
    "functions_with_default_privileges": f"""
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.oid IN ({_USER_SCHEMAS}) AND p.proacl IS NULL
          AND {_NOT_FROM_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}
    """,
    "default_privileges": f"""
        SELECT pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace::text, d.defaclobjtype, {_GRANT_ROW}
        FROM pg_default_acl AS d CROSS JOIN LATERAL aclexplode(d.defaclacl) AS a
    """,
    "policies": f"""
        SELECT n.nspname, c.relname, p.polname, p.polcmd, p.polpermissive,
               (SELECT array_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END ORDER BY 1)
                FROM unnest(p.polroles) AS r)::text,
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
        FROM pg_policy AS p
        JOIN pg_class AS c ON c.oid = p.polrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.oid IN ({_USER_SCHEMAS})
    """,
    "comments": f"""
        SELECT ds.classoid::regclass::text, n.nspname, coalesce(c.relname, p.proname), ds.objsubid, ds.description
        FROM pg_description AS ds
        LEFT JOIN pg_class AS c ON ds.classoid = 'pg_class'::regclass AND c.oid = ds.objoid
        LEFT JOIN pg_proc AS p ON ds.classoid = 'pg_proc'::regclass AND p.oid = ds.objoid
        JOIN pg_namespace AS n ON n.oid = coalesce(c.relnamespace, p.pronamespace)
        WHERE n.oid IN ({_USER_SCHEMAS})
          AND {_NOT_FROM_EXTENSION.format(catalog="ds.classoid", oid="ds.objoid")}
    """,
}

# every role the snapshot names: owners, grantees, policy roles
_NAMED_ROLES = """
    SELECT r.oid FROM pg_roles AS r WHERE r.rolname = ANY($1::text[])
"""
ROLE_QUERIES: dict[str, str] = {
    "roles": f"""
        SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
               r.rolreplication, r.rolbypassrls
        FROM pg_roles AS r WHERE r.oid IN ({_NAMED_ROLES})
    """,
    "role_memberships": f"""
        SELECT pg_get_userbyid(m.roleid), pg_get_userbyid(m.member), m.admin_option
        FROM pg_auth_members AS m WHERE (m.roleid IN ({_NAMED_ROLES}) OR m.member IN ({_NAMED_ROLES}))
          -- roles are the cluster's: the login roles other tests create (and drop) come and go
          -- while this compares, in a run beside others
          AND pg_get_userbyid(m.member) NOT LIKE 'jr\\_test\\_%'
    """,
}

Snapshot = dict[str, list[tuple[Any, ...]]]


async def schema_snapshot(conn: asyncpg.Connection) -> Snapshot:
    """The schema of the database `conn` is connected to, as sorted rows per kind of object."""
    snapshot: Snapshot = {}
    for kind, query in QUERIES.items():
        rows = await conn.fetch(query)
        snapshot[kind] = sorted((tuple(r.values()) for r in rows), key=repr)
    roles = {
        row[i]
        for kind in ("schemas", "relations", "functions")
        for row in snapshot[kind]
        for i in ([1] if kind == "schemas" else [3])
    }
    roles |= {
        row[i]
        for kind, i in (("schema_grants", 1), ("relation_grants", 2), ("column_grants", 3))
        for row in snapshot[kind]
    }
    roles |= {row[3] for row in snapshot["function_grants"]}
    roles |= {name for row in snapshot["policies"] for name in row[5].strip("{}").split(",") if name}
    for kind, query in ROLE_QUERIES.items():
        rows = await conn.fetch(query, sorted(roles))
        snapshot[kind] = sorted((tuple(r.values()) for r in rows), key=repr)
    return snapshot


def schema_differences(first: Snapshot, second: Snapshot, names: tuple[str, str] = ("first", "second")) -> list[str]:
    """What one snapshot holds and the other does not, one line per row; empty when equal."""
    lines: list[str] = []
    for kind in first.keys() | second.keys():
        a, b = first.get(kind, []), second.get(kind, [])
        only_a = [row for row in a if row not in b]
        only_b = [row for row in b if row not in a]
        lines += [f"{kind}: only in {names[0]}: {row!r}" for row in only_a]
        lines += [f"{kind}: only in {names[1]}: {row!r}" for row in only_b]
    return sorted(lines)
