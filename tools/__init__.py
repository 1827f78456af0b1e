"""Developer tools of the uvfs repository (run from a checkout, never installed)."""
