"""Device shadow (configuration): payload parsing, the sync state machine, inbox, listener and handlers."""
