"""A FastAPI service calling flaky downstreams through httpx, a policy per host (see README.md)."""
