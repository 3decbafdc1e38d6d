-- bty-web state, schema version 1.
--
-- Times are RFC 3339 UTC text with a fixed nine-digit fraction
-- (2026-11-22T10:00:00.000000000Z), so they sort and compare as text and
-- round-trip exactly. Enumerated values (boot_policy, provisioning_mode,
-- ...) are checked in Go, not by CHECK constraints, so a later migration
-- can add a value without rebuilding the table. Add columns with
-- ALTER TABLE ... ADD COLUMN in a new migration file.

CREATE TABLE machines (
	mac                       TEXT NOT NULL PRIMARY KEY, -- aa:bb:cc:dd:ee:ff
	image                     TEXT NOT NULL DEFAULT '',
	provisioning_mode         TEXT NOT NULL DEFAULT '',
	hostname                  TEXT NOT NULL DEFAULT '',
	cijoe_workflow_ref        TEXT NOT NULL DEFAULT '',
	last_known_good           TEXT NOT NULL DEFAULT '',
	discovered_at             TEXT,
	last_seen_at              TEXT,
	last_seen_ip              TEXT NOT NULL DEFAULT '',
	boot_policy               TEXT NOT NULL DEFAULT 'local',
	next_boot                 TEXT NOT NULL DEFAULT 'flash',
	last_flashed_at           TEXT,
	last_workflow_run_at      TEXT,
	last_workflow_status      TEXT,
	last_workflow_output_path TEXT NOT NULL DEFAULT '',
	created_at                TEXT NOT NULL,
	updated_at                TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE sessions (
	token_hash BLOB NOT NULL PRIMARY KEY, -- SHA-256 of the token; never the token
	expires_at TEXT NOT NULL,
	created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE settings (
	key        TEXT NOT NULL PRIMARY KEY,
	value      TEXT NOT NULL,
	updated_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE image_hashes (
	name       TEXT NOT NULL PRIMARY KEY,
	size       INTEGER NOT NULL,
	mtime      TEXT NOT NULL,
	sha256     TEXT NOT NULL,
	updated_at TEXT NOT NULL
) WITHOUT ROWID;
