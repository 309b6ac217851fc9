"""polycap's stages: one composite PTransform per module.

Importing the package first imports Beam's RunInference module and spaCy's thinc with torch
hidden (``torch_free``): neither uses torch here, and importing it costs each process ~2 s."""

from polycap.transforms.torch_free import hide_torch_from

hide_torch_from()
