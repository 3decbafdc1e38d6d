-- Schema version 7: cijoe-online (docs/reference.md, "cijoe-online").
-- Every workflow run is a row of runs (its JSON in doc); a machine
-- carries the login, port and timeout of its runs ('' and 0 for the
-- defaults). last_known_good now holds the baseline as JSON; a value
-- that is not JSON is an older version's image name and still reads.
ALTER TABLE machines ADD COLUMN cijoe_ssh_user TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN cijoe_ssh_port INTEGER NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN cijoe_timeout TEXT NOT NULL DEFAULT '';
CREATE TABLE runs (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	mac TEXT NOT NULL,
	result TEXT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX runs_by_mac ON runs (mac, id);
CREATE INDEX runs_by_result ON runs (result);
