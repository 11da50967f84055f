CREATE TABLE IF NOT EXISTS "plant"."tags" ("timestamp" timestamptz NOT NULL, "tag" text, "value" double precision, "value_text" text, "quality" text, "_key" text COLLATE "C" NOT NULL)
SELECT create_hypertable('"plant"."tags"', 'timestamp', if_not_exists => TRUE, migrate_data => TRUE)
CREATE UNIQUE INDEX IF NOT EXISTS "tags__key_uq" ON "plant"."tags" ("_key", "timestamp")
