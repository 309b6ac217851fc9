"""polycap's stages: one composite PTransform per module.

Importing the package first imports spaCy's thinc with torch hidden (``torch_free``): it does
not use torch here, and importing torch costs each process ~2 s."""

from polycap.transforms.torch_free import hide_torch_from

hide_torch_from()
