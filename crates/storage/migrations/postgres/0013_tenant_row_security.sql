-- Row-level security per tenant: a second wall behind the repositories' tenant filters.
--
-- The schema's owner (the role the server connects as) keeps full access: system work —
-- the outbox relay, the dispatcher, the sync and webhook workers, the group-commit writer
-- whose batches mix tenants — spans tenants, and row security does not bind a table's
-- owner unless forced. Reads made on a tenant's behalf run inside `Db::tenant_scope`: a
-- transaction that switches to the restricted role `lastmile_tenant` and names its tenant
-- with `set_config('lastmile.tenant', <id>, true)`. For that role every table with a
-- `tenant_id` shows only the named tenant's rows (and takes writes only for it), and
-- nothing at all when no tenant is named; tables without a tenant column are not granted.
--
-- The role is per PostgreSQL cluster. Creating it needs CREATEROLE; without it (and
-- without the role made beforehand by an administrator) this migration sets nothing up,
-- and the server reads without the role switch, its tenant filters the only wall.

DO $$
DECLARE
    t text;
BEGIN
    BEGIN
        CREATE ROLE lastmile_tenant NOLOGIN NOBYPASSRLS;
    EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL; -- made by another database here
        WHEN insufficient_privilege THEN
            RAISE NOTICE 'lastmile: cannot create role lastmile_tenant; row security not set up';
    END;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lastmile_tenant') THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE format('GRANT lastmile_tenant TO %I', current_user);
    EXCEPTION WHEN OTHERS THEN
        NULL; -- already a member, or a superuser (who may take any role)
    END;
    GRANT USAGE ON SCHEMA public TO lastmile_tenant;
    FOR t IN
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables tb ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
        WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND tb.table_type = 'BASE TABLE'
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_wall ON %I', t);
        EXECUTE format(
            'CREATE POLICY tenant_wall ON %I TO lastmile_tenant '
            'USING (tenant_id = current_setting(''lastmile.tenant'', true)) '
            'WITH CHECK (tenant_id = current_setting(''lastmile.tenant'', true))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO lastmile_tenant', t);
    END LOOP;
    ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
    DROP POLICY IF EXISTS tenant_wall ON tenants;
    CREATE POLICY tenant_wall ON tenants TO lastmile_tenant
        USING (id = current_setting('lastmile.tenant', true));
    GRANT SELECT ON tenants TO lastmile_tenant;
END
$$;
