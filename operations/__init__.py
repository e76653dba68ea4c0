"""Running the service's Ray, outside the graph: serve.env (the settings every Ray process reads at start), the
stale-HAProxy cleanup that goes before a Ray starts, config overlays, and private ports for a second Serve on one
host. Nothing here is imported by a replica."""
