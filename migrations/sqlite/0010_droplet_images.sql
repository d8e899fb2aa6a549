-- Issue 3 (Dockerfile lifecycle): droplets that are images built from an app's Dockerfile. The
-- droplet blob is the image's `docker save` tar; a node without the image loads it from there.
-- A row whose droplet blob was collected names an image nodes may remove from their engines.
CREATE TABLE droplet_images (
    droplet   TEXT PRIMARY KEY,
    image_id  TEXT NOT NULL,
    port      INTEGER NOT NULL,
    -- Numeric uid:gid the instances run as (the image's USER resolved at build; never root).
    run_user  TEXT NOT NULL DEFAULT ''
);
