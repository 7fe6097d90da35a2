-- Cluster mode: which node runs each tenant's matching. A node holds a tenant's lease
-- while `expires_at` (unix ms, by the holder's clock) is ahead; it renews well before
-- then, and another node may take the lease only once it has run out. The database's
-- capacity and offer constraints stay the last wall if two nodes ever both match.
CREATE TABLE dispatch_leases (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    node_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
