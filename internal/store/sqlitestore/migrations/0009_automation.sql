-- Schema version 9: health watching, failure recovery and quarantine
-- (docs/reference.md, "Failure recovery"). The settings are text like
-- the other durations ('' for off or the default); the state is JSON
-- ('' for none).
ALTER TABLE machines ADD COLUMN health_every TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN health_fail_after TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN health TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN recovery TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN quarantine TEXT NOT NULL DEFAULT '';
