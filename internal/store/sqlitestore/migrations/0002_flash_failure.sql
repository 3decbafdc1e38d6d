-- Schema version 2: the live env reports a failed flash
-- (POST /pxe/{mac}/failed); the record keeps the last one.
ALTER TABLE machines ADD COLUMN last_failed_at TEXT;
ALTER TABLE machines ADD COLUMN last_failure TEXT NOT NULL DEFAULT '';
