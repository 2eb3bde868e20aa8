"""The translator stack shared by clients and bricks.

Translator modules register their volfile type names on import (`@register("storage/posix")`);
`load_all()` imports every module of the category packages so a volfile can name any of them.
"""
from __future__ import annotations

import importlib
import pkgutil

CATEGORIES = ("storage", "features", "protocol", "cluster", "performance", "debug")


def load_all() -> None:
    for cat in CATEGORIES:
        pkg = importlib.import_module(f"{__name__}.{cat}")
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
