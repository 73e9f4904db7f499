"""Access floor: abuse limits (token buckets per role) and who exists (known users,
revoked tokens)."""
