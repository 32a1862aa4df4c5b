"""Plain domain service classes (no Ray): the Serve deployments in :mod:`serve_apps.deployments`
are thin shells around them, and the gateway calls them through one handle hop."""
