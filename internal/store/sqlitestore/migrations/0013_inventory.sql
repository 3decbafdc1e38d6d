-- Schema version 13: the machine's inventory (docs/reference.md,
-- "Inventory"): the live env's last report as JSON ('' for none) and
-- when it came. The derived labels are worked out from it on every read
-- and mirrored, with the machine's own labels over them, in
-- machine_labels, where selectors look. machine_nics links the MACs of
-- a machine's other NICs to its record (machine: the record's MAC), so a
-- PXE contact from one of them is that machine.
ALTER TABLE machines ADD COLUMN inventory TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN inventory_at TEXT;
CREATE TABLE machine_nics (
	mac TEXT PRIMARY KEY,
	machine TEXT NOT NULL
);
CREATE INDEX machine_nics_by_machine ON machine_nics (machine);
