"""The text-guided fusion network and its checkpoint handling."""
