-- Schema version 5: how bty-web reaches a machine's BMC
-- (docs/reference.md, "Power control"), as JSON (driver, address,
-- username, password, cipher_suite, system, insecure); '' when none.
ALTER TABLE machines ADD COLUMN power TEXT NOT NULL DEFAULT '';
