"""Human review web app: refine, prefer and judge tasks (issue #4)."""
