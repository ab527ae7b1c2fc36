-- PostgreSQL twin of sqlite/0010_audit_chain.sql.
ALTER TABLE audit ADD COLUMN hash TEXT;
