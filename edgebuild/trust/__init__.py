"""Lock files, provenance, signatures and verification of a published build."""
