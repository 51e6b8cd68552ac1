"""Evaluation on challenge-layout data (``jmlr eval``): alignment, inference, PnP, metrics."""
