-- Records the version this file installs; keep in step with SCHEMA_VERSION in src/schema.rs.
INSERT INTO pgbroker.schema_version (version) VALUES (1) ON CONFLICT (version) DO NOTHING;
