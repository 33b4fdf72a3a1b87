"""Artifacts on disk: atomic writes, manifests, checkpoint folders and integrity checks."""
