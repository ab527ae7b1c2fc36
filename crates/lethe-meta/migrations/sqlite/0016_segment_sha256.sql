-- Each segment's SHA-256 (hex), computed as its bytes were written: the content hash a
-- deletion task's receipt names for the segments it retired and created (CRC-32 stays the
-- integrity check of reads). NULL for segments written before it existed.
ALTER TABLE segments ADD COLUMN sha256 TEXT;
