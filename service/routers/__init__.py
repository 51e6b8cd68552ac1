"""HTTP routers: reconstruct and health (core), devices and meshes (storage)."""
