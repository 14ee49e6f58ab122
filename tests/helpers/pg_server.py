"""Server options of the throwaway PostgreSQL clusters the tests start (shared by tests/conftest.py and the
tests that start a cluster of their own; importing ``conftest`` by name is ambiguous once a package has
its own conftest.py)."""

# Durability is irrelevant for a throwaway cluster; fsync off makes CREATE DATABASE and commits cheap.
PG_SERVER_OPTIONS = (
    "-c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=200 -c shared_buffers=32MB"
)
