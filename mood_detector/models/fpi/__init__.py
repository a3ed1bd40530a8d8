"""Foreign Patch Interpolation (Tan et al., MOOD 2020 winner)."""
