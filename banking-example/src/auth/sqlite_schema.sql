-- The auth tables of banking-example in SQLite (in the application's
-- database file, beside the event store's tables).
-- UUIDs are TEXT (hyphenated, lowercase); times are TEXT, ISO-8601 UTC with
-- microseconds and a fixed width (`2024-01-31T12:00:00.000000Z`), so they
-- sort as they compare; booleans are INTEGER 0/1; roles are a JSON array.
CREATE TABLE IF NOT EXISTS auth_users (
    id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    family_id TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_refresh_tokens_family ON auth_refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS auth_refresh_tokens_user ON auth_refresh_tokens (user_id);
CREATE TABLE IF NOT EXISTS auth_password_resets (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    created_at TEXT NOT NULL
);
-- Failed logins per username and source (client address, IPv6 by /64);
-- rows idle for an hour are purged. Replaces auth_login_attempts (keyed
-- on the username alone; transient state, dropped).
DROP TABLE IF EXISTS auth_login_attempts;
CREATE TABLE IF NOT EXISTS auth_login_failures (
    username TEXT NOT NULL,
    source TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (username, source)
);
CREATE INDEX IF NOT EXISTS auth_login_failures_updated ON auth_login_failures (updated_at);
CREATE INDEX IF NOT EXISTS auth_password_resets_user ON auth_password_resets (user_id);
CREATE INDEX IF NOT EXISTS auth_password_resets_expiry ON auth_password_resets (expires_at);
-- Reset mails waiting for delivery: the seed of the token, never the
-- token; a delivered mail is deleted, an expired one purged. Replaces
-- auth_mail_outbox (which kept tokens in plain text; dropped).
DROP TABLE IF EXISTS auth_mail_outbox;
CREATE TABLE IF NOT EXISTS auth_reset_mails (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    token_seed TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_reset_mails_recipient ON auth_reset_mails (recipient);
CREATE INDEX IF NOT EXISTS auth_reset_mails_expiry ON auth_reset_mails (expires_at);
-- Revoked access tokens (without Redis): a token, a session or a user's
-- "valid after" time, kept until the tokens concerned expire.
CREATE TABLE IF NOT EXISTS auth_revocations (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    detail TEXT,
    until TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS auth_revocations_until ON auth_revocations (until);
