-- Schema version 10: the automation's history (docs/reference.md,
-- "Failure recovery"): every step recovery takes on a machine, its
-- quarantine and its clearing, is a row of actions (its JSON in doc).
CREATE TABLE actions (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	mac TEXT NOT NULL,
	at TEXT NOT NULL,
	action TEXT NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX actions_by_mac ON actions (mac, id);
CREATE INDEX actions_by_action ON actions (action, at);
