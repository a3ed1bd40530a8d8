"""Natural-synthetic-anomaly detector (FPI network with skips, trained on the NSA task)."""
