"""Reproduction tables, ablations, importance and plots from what studies and runs wrote."""

from analysis.results import AnalysisError, load, load_runs, load_study

__all__ = ["AnalysisError", "load", "load_runs", "load_study"]
