"""Comparison reports and plots (no training imports)."""
