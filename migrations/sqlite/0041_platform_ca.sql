-- Issue 25: the platform CA that signs instance identity certificates. One row per CA name
-- (`instance-identity`), created once by the first controller to start and read by every other;
-- the private key is sealed with the controllers' secret key (`secrets::SecretBox`, the name as
-- associated data), like the JWT signing keys, so the database alone does not give it away.
CREATE TABLE platform_cas (
    name        TEXT PRIMARY KEY,
    certificate TEXT NOT NULL,
    private_key TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
