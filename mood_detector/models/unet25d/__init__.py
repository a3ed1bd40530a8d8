"""The 2.5D detector: a 2D U-Net on each slice with its neighbours and coordinates, trained like unet3d."""
