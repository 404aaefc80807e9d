"""The opt-in live suite: exbe against a real Windows (or Exchange) host named by EXBE_LIVE_* (docs/live-testing.md)."""
