-- Schema version 11: schedules (docs/reference.md, "Schedules"). Each
-- schedule is one row: its settings and the state of its latest
-- occurrence as JSON in doc (fleet.Schedule).
CREATE TABLE schedules (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	doc TEXT NOT NULL
);
