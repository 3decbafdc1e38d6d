-- Schema version 3: a machine's cloud-init seed, served to the live env
-- during a flash cycle (GET /pxe/{mac}/user-data, meta-data), and the
-- policy its last PXE contact was served (which opens that window).
ALTER TABLE machines ADD COLUMN user_data TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN meta_data TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN last_served TEXT NOT NULL DEFAULT '';
