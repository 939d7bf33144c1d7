-- Create the partition of `parent` holding the month of `month` (UTC), unless it exists, and
-- move that month's rows out of the default partition into it. PostgreSQL refuses to attach a
-- partition whose range has rows in the default partition, hence the move; both happen in the
-- caller's transaction, so each row is in the default partition before the commit and in the new
-- partition after it, never in both or neither.
--
-- Locks, in ATTACH's own order and bounded: every wait ends after lock_timeout (2 s) with an
-- error (a long reader then makes this fail and the caller retry later, instead of queueing every
-- other session behind it). The parent is held in SHARE UPDATE EXCLUSIVE mode (reads and writes
-- go on); the default partition in ACCESS EXCLUSIVE mode, which ATTACH needs anyway, taken before
-- the move so that no row of the month can land in it between the move and the attach. How long
-- that lock is held grows with the rows moved (and the default partition's size, which ATTACH
-- scans): with `max_move_rows` set, a month with more rows than that waiting in the default
-- partition is refused (program_limit_exceeded) before any lock is taken.
--
-- One row (the new partition's name, the rows moved) when it created the partition; none when
-- the partition existed.
-- requires: require_app_partitioned_table, protect_partition

CREATE OR REPLACE FUNCTION public.create_month_partition(parent regclass, month date, max_move_rows bigint DEFAULT NULL)
RETURNS TABLE (partition_name text, moved_rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '2s' AS $$
DECLARE
    first_day date := date_trunc('month', month)::date;
    lower_bound timestamptz := first_day::timestamp AT TIME ZONE 'UTC';
    upper_bound timestamptz := (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    parent_schema text;
    parent_name text;
    new_name text;
    new_table text;
    range_check text;
    default_partition regclass;
    column_list text;
    waiting bigint;
    moved bigint := 0;
BEGIN
    PERFORM public.require_app_partitioned_table(parent);
    IF month IS NULL THEN
        RAISE EXCEPTION 'create_month_partition: month must not be NULL';
    END IF;
    IF max_move_rows < 0 THEN
        RAISE EXCEPTION 'create_month_partition: max_move_rows must be 0 or more (NULL: no limit)';
    END IF;
    SELECT n.nspname, c.relname INTO parent_schema, parent_name
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = parent AND c.relkind = 'p';
    IF parent_name IS NULL THEN
        RAISE EXCEPTION '% is not a partitioned table', parent;
    END IF;
    new_name := parent_name || '_p' || to_char(first_day, 'YYYY_MM');
    new_table := format('%I.%I', parent_schema, new_name);
    range_check := new_name || '_range';
    -- two maintainers creating the same month: the second waits, then finds it
    PERFORM pg_advisory_xact_lock(hashtext('jobrunner_app:partitions:' || parent::text));
    IF to_regclass(new_table) IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT c.oid::regclass INTO default_partition
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';

    IF default_partition IS NOT NULL AND max_move_rows IS NOT NULL THEN
        -- counted before any lock is taken (a plain read blocks nobody), stopping at the limit
        EXECUTE format('SELECT count(*) FROM (SELECT FROM %s WHERE created_at >= $1 AND created_at < $2 LIMIT $3) AS r',
                       default_partition)
            INTO waiting USING lower_bound, upper_bound, max_move_rows + 1;
        IF waiting > max_move_rows THEN
            RAISE EXCEPTION '% holds more than % rows of %: not moved, % not created', default_partition,
                max_move_rows, to_char(first_day, 'YYYY-MM'), new_name
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = format('In a quiet hour: SELECT * FROM public.create_month_partition(%L, %L)',
                                    parent::text, first_day);
        END IF;
    END IF;

    EXECUTE format('LOCK TABLE ONLY %s IN SHARE UPDATE EXCLUSIVE MODE', parent);
    IF default_partition IS NOT NULL THEN
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', default_partition);
    END IF;

    EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', new_table, parent);
    -- the range as a constraint: ATTACH then need not scan the new table to check its rows
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (created_at IS NOT NULL AND created_at >= %L::timestamptz '
                   'AND created_at < %L::timestamptz)', new_table, range_check, lower_bound, upper_bound);
    IF default_partition IS NOT NULL THEN
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO column_list
        FROM pg_attribute AS a WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped;
        EXECUTE format('WITH moved AS (DELETE FROM %s WHERE created_at >= $1 AND created_at < $2 RETURNING %s) '
                       'INSERT INTO %s (%s) SELECT %s FROM moved',
                       default_partition, column_list, new_table, column_list, column_list)
            USING lower_bound, upper_bound;
        GET DIAGNOSTICS moved = ROW_COUNT;
    END IF;
    -- ATTACH builds the parent's indexes (primary key included) on the new table, after the move
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                   parent, new_table, lower_bound, upper_bound);
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', new_table, range_check);
    PERFORM public.protect_partition(new_table::regclass);
    partition_name := new_name;
    moved_rows := moved;
    RETURN NEXT;
END
$$;

-- for the worker and the admin role only (Supabase grants anon/authenticated every new function)
REVOKE ALL ON FUNCTION public.create_month_partition(regclass, date, bigint) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.create_month_partition(regclass, date, bigint) TO jobrunner_worker, service_role;
