-- Schema version 6: flash history (docs/reference.md, "Flash history")
-- and readiness. Every flash attempt is a row of flashes (its JSON in
-- doc, the sha256 of its cycle token in token_hash, never the token);
-- a machine carries its latest flash as JSON ('' before the first), its
-- ready check and its flash deadline ('' for the defaults).
ALTER TABLE machines ADD COLUMN ready_check TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN flash_deadline TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN flash TEXT NOT NULL DEFAULT '';
CREATE TABLE flashes (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	mac TEXT NOT NULL,
	requested_at TEXT NOT NULL,
	result TEXT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX flashes_by_mac ON flashes (mac, id);
CREATE INDEX flashes_by_result ON flashes (result);
CREATE INDEX flashes_by_time ON flashes (requested_at);
