"""SQUID: deep feature in-painting with a space-aware memory queue (Xiang et al.; thesis Chapter 3).

``memory.py`` holds the memory queue, the learned memory matrices and Gumbel shrinkage, ``inpaint.py`` the
in-painting block, ``networks.py`` the generator (encoder, student and teacher decoders) and discriminator,
``detector.py`` the detector behind the common interface (training, calibration, scoring).
"""
