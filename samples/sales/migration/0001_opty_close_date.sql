-- The sample migration `berth demo` ships from a developer's copy to every site (seed 000:
-- a schema change turned into a versioned migration that runs at every copy).
--   berth migration create --site dev --name opty-close-date --sql samples/sales/migration/0001_opty_close_date.sql
ALTER TABLE opty ADD COLUMN close_date TEXT;
CREATE INDEX opty_close_date ON opty(close_date);
