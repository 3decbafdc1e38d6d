-- Schema version 4: a machine's flash cycle (docs/reference.md, "The
-- flash cycle"): the sha256 of its token (the token itself is never
-- stored), the address it is bound to, when it started and expires,
-- which halves of the seed it released (1 user-data, 2 meta-data); and
-- the last contact from another address during an open cycle.
ALTER TABLE machines ADD COLUMN cycle_token_hash TEXT;
ALTER TABLE machines ADD COLUMN cycle_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN cycle_started_at TEXT;
ALTER TABLE machines ADD COLUMN cycle_expires_at TEXT;
ALTER TABLE machines ADD COLUMN cycle_seed_served INTEGER NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN last_conflict_at TEXT;
ALTER TABLE machines ADD COLUMN last_conflict_ip TEXT NOT NULL DEFAULT '';
