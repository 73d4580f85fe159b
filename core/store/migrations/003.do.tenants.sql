-- A tenant's reference to an image: what that tenant sent and may see.
-- Answers and originals stay shared (content-addressed, one inference per
-- image); an image goes once no tenant references it.
CREATE TABLE image_refs (
  tenant      text        NOT NULL CHECK (tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  sha256      text        NOT NULL REFERENCES images (sha256) ON DELETE CASCADE,
  first_seen  timestamptz NOT NULL DEFAULT now(),
  last_seen   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, sha256)
);
CREATE INDEX image_refs_sha256_idx ON image_refs (sha256);
CREATE INDEX image_refs_last_seen_idx ON image_refs (last_seen);

-- Rows from before tenants belong to the default tenant.
INSERT INTO image_refs (tenant, sha256, first_seen, last_seen)
SELECT 'default', sha256, first_seen, last_seen FROM images;

ALTER TABLE feedback ADD COLUMN tenant text NOT NULL DEFAULT 'default';
CREATE INDEX feedback_tenant_sha256_idx ON feedback (tenant, sha256);
