CREATE TABLE IF NOT EXISTS "plant"."tags" ("timestamp" timestamptz, "tag" text, "value" double precision, "value_text" text, "quality" text, "_key" text COLLATE "C" NOT NULL)
CREATE UNIQUE INDEX IF NOT EXISTS "tags__key_uq" ON "plant"."tags" ("_key")
