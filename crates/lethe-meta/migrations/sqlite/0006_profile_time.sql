-- The event time a profile is current as of: an imported snapshot replaces the profile only
-- when its event is not older (imports arrive in any order).
ALTER TABLE profiles ADD COLUMN as_of INTEGER NOT NULL DEFAULT 0;
