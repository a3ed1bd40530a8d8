"""The volumetric detector (3D U-Net on synthetic anomalies in 3D)."""
