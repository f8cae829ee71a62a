"""Every HTTP route, its middleware, auth, errors and bodies (SPEC §4)."""
