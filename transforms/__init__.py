"""polycap's stages: one composite PTransform per module."""
