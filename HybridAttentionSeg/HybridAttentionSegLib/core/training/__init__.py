"""Training: seeded, bit-reproducible training of the bundled demo models."""
