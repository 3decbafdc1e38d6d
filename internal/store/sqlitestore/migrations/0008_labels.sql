-- Schema version 8: machine labels (docs/reference.md, "Labels and
-- selectors"). The record keeps them as JSON ('' for none); the
-- machine_labels rows mirror them so a selector is an indexed lookup.
ALTER TABLE machines ADD COLUMN labels TEXT NOT NULL DEFAULT '';
CREATE TABLE machine_labels (
	mac TEXT NOT NULL,
	key TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (mac, key)
);
CREATE INDEX machine_labels_by_key ON machine_labels (key, value);
