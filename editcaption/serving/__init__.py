"""Ray Serve endpoint for the captioner (issue #7)."""
