"""pytest plugin for entur_oauth users (fixtures added by the test-kit work)."""
