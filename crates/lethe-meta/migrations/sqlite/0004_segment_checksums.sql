-- CRC-32 of each segment file's bytes, written with the file and verified before the file is
-- read: a flipped byte is detected instead of served. NULL for segments written before.
ALTER TABLE segments ADD COLUMN crc32 INTEGER;
