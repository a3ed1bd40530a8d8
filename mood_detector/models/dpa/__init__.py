"""Deep Perceptual Autoencoder (Tuluptceva et al.): a progressively grown autoencoder trained and scored with
the relative-perceptual-L1 loss only; its MOOD 2020 entry placed third at pixel level."""
