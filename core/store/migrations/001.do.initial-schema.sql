-- Models that have produced answers; results are keyed by model.
CREATE TABLE models (
  id          bigserial PRIMARY KEY,
  name        text        NOT NULL,
  version     text        NOT NULL,
  sha256      text        NOT NULL,
  source      text        NOT NULL,
  first_loaded timestamptz NOT NULL DEFAULT now(),
  UNIQUE (name, version, sha256)
);

-- One row per distinct original image (content-addressed by sha256).
CREATE TABLE images (
  sha256      text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size_bytes  bigint      NOT NULL,
  mime        text        NOT NULL,
  width       integer     NOT NULL,
  height      integer     NOT NULL,
  object_key  text,
  first_seen  timestamptz NOT NULL DEFAULT now(),
  last_seen   timestamptz NOT NULL DEFAULT now(),
  hit_count   bigint      NOT NULL DEFAULT 0
);
CREATE INDEX images_last_seen_idx ON images (last_seen);

-- The answer of one model for one image. scores holds every class
-- probability (float32 little-endian) so any top-k can be served later.
CREATE TABLE classifications (
  sha256      text        NOT NULL REFERENCES images (sha256) ON DELETE CASCADE,
  model_id    bigint      NOT NULL REFERENCES models (id),
  labels      jsonb       NOT NULL,
  scores      bytea       NOT NULL,
  timings     jsonb       NOT NULL,
  request_id  text        NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (sha256, model_id)
);

-- Ground truth from reviewers or labelled sets, for quality metrics.
CREATE TABLE feedback (
  id          bigserial   PRIMARY KEY,
  sha256      text        NOT NULL,
  true_class  integer     NOT NULL CHECK (true_class >= 0),
  source      text        NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_created_idx ON feedback (created_at);
CREATE INDEX feedback_sha256_idx ON feedback (sha256);

-- Events written in the same transaction as the data they describe,
-- published to Kafka by the relay, deleted once acknowledged.
CREATE TABLE outbox (
  id          bigserial   PRIMARY KEY,
  event_id    text        NOT NULL UNIQUE,
  topic       text        NOT NULL,
  key         text        NOT NULL,
  payload     bytea       NOT NULL,
  headers     jsonb       NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now(),
  attempts    integer     NOT NULL DEFAULT 0
);
