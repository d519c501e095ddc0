"""Who may trade what: entitlements, order signing, alerts, the sentinel and the audit chain."""
