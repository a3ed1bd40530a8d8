"""DDAD with ASR-Net: dual-distribution discrepancy with self-supervised anomaly score refinement."""
