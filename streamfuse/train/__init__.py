"""Training: data, degradations, losses, trainer."""
