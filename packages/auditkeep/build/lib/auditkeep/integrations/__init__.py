"""Optional integrations with third-party libraries (each imports its library lazily)."""
