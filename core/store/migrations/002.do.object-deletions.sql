-- Objects whose rows retention removed, deleted from storage in a second
-- step; a row here survives a crash, so the next run finishes the job.
CREATE TABLE object_deletions (
  object_key  text        PRIMARY KEY,
  sha256      text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
