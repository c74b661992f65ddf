-- Up Migration
-- Direct uploads (seed 001: the bytes go straight to blob storage, bypassing the database): one
-- row per announced upload, from `POST /api/uploads` until `POST /api/uploads/:id/complete`
-- ingests it into an `images` row. `processing` is claimed atomically, so two completes of one
-- upload cannot make two images; `failed` = the bytes were refused (and deleted). The bytes themselves are in the blob store at storage_key.
CREATE TABLE image_uploads (
  upload_id VARCHAR(20) PRIMARY KEY,
  user_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  filename VARCHAR(255) NOT NULL,
  mime_type VARCHAR(50) NOT NULL,
  file_size BIGINT NOT NULL,
  storage_key VARCHAR(500) NOT NULL UNIQUE,
  created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
  expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
  status VARCHAR(20) NOT NULL DEFAULT 'pending',
  image_id VARCHAR(20) REFERENCES images(image_id) ON DELETE SET NULL,

  CONSTRAINT image_uploads_file_size_check CHECK (file_size > 0),
  CONSTRAINT image_uploads_status_check CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
  CONSTRAINT image_uploads_expiry_check CHECK (expires_at > created_at)
);

CREATE INDEX idx_image_uploads_user_id ON image_uploads (user_id);
CREATE INDEX idx_image_uploads_expires_at ON image_uploads (expires_at) WHERE status = 'pending';

-- Down Migration
DROP TABLE image_uploads;
