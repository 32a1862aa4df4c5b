"""The HTTP gateway: FastAPI app factory, routers per resource, auth/CSRF/idempotency dependencies,
error mapping and middleware.  Runs as the Serve ingress deployment or on plain uvicorn."""
