"""Evaluation: pure metrics, the evaluator that embeds a split, and plots."""
