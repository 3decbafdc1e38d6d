-- Schema version 12: rollouts of a new image (docs/reference.md,
-- "Rollouts"). One row per rollout: its JSON in doc (the machines'
-- list and states included); active is 1 while bty-web must still
-- advance it (live, or stopped with machines in flight).
CREATE TABLE rollouts (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	state TEXT NOT NULL,
	active INTEGER NOT NULL,
	doc TEXT NOT NULL
);
CREATE INDEX rollouts_by_active ON rollouts (active, id);
