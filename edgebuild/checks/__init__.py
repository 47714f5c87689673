"""Measuring shipped artifacts and judging them against the recipe's checks and budgets."""
