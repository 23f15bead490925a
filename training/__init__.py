"""Training of the shipped model, its procedural shapes data and the shapes scorer (never imported by dit_cache)."""
