"""Models: the architecture registry (spec, built-ins), the networks we compose, and model cards."""
