"""GitHub Actions runners on ephemeral Fly machines (issue 13): the standalone pieces."""
