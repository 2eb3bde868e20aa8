"""gvol-brickd: serves one brick directory (a brick volfile ending in protocol/server)."""
