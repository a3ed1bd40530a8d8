"""Evaluation: synthetic outliers (FPI paper Sec. 3.1), the MOOD-style test set maker, exact streaming
metrics (AP, AUROC, greedy-threshold DICE), the evaluator and the benchmark pipeline."""
