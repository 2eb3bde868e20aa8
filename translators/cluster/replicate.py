"""`type cluster/replicate` lives in afr.py (GlusterFS's name for it: Automatic File
Replication); this module lets a volfile find it by the conventional module name."""
from __future__ import annotations

from .afr import Replicate

__all__ = ["Replicate"]
