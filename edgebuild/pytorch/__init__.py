"""Model-level PyTorch code used inside steps: the recipe's module and its training."""
