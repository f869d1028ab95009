"""Export-friendly model definitions, constructor- and state_dict-compatible with vit-pytorch 1.x."""
from .zoo import (FAMILIES, PRESETS, Preset, create_model, get_preset, model_stats, register_family,  # noqa: F401
                  register_preset)
