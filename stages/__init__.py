"""The optimizer's async stages (trajectory retrieval, refinement, generation, evaluation)."""

__all__: list[str] = []
