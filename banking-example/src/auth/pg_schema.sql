-- The auth tables of banking-example ({s} is the application's schema).
CREATE TABLE IF NOT EXISTS {s}.auth_users (
    id UUID PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles TEXT[] NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.auth_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id UUID NOT NULL,
    family_id UUID NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ,
    revoked BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS auth_refresh_tokens_family ON {s}.auth_refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS auth_refresh_tokens_user ON {s}.auth_refresh_tokens (user_id);
CREATE TABLE IF NOT EXISTS {s}.auth_password_resets (
    token_hash TEXT PRIMARY KEY,
    user_id UUID NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Failed logins per username and source (client address, IPv6 by /64);
-- rows idle for an hour are purged. Replaces auth_login_attempts (keyed
-- on the username alone; transient state, dropped).
DROP TABLE IF EXISTS {s}.auth_login_attempts;
CREATE TABLE IF NOT EXISTS {s}.auth_login_failures (
    username TEXT NOT NULL,
    source TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (username, source)
);
CREATE INDEX IF NOT EXISTS auth_login_failures_updated ON {s}.auth_login_failures (updated_at);
CREATE INDEX IF NOT EXISTS auth_password_resets_user ON {s}.auth_password_resets (user_id);
CREATE INDEX IF NOT EXISTS auth_password_resets_expiry ON {s}.auth_password_resets (expires_at);
-- Reset mails waiting for delivery: the seed of the token, never the
-- token; a delivered mail is deleted, an expired one purged. Replaces
-- auth_mail_outbox (which kept tokens in plain text; dropped).
DROP TABLE IF EXISTS {s}.auth_mail_outbox;
CREATE TABLE IF NOT EXISTS {s}.auth_reset_mails (
    id BIGSERIAL PRIMARY KEY,
    recipient TEXT NOT NULL,
    token_seed TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_reset_mails_recipient ON {s}.auth_reset_mails (recipient);
CREATE INDEX IF NOT EXISTS auth_reset_mails_expiry ON {s}.auth_reset_mails (expires_at);
-- Revoked access tokens (without Redis): a token, a session or a user's
-- "valid after" time, kept until the tokens concerned expire.
CREATE TABLE IF NOT EXISTS {s}.auth_revocations (
    kind TEXT NOT NULL,
    id UUID NOT NULL,
    detail TEXT,
    until TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS auth_revocations_until ON {s}.auth_revocations (until);
