"""The menu's text UI: keys (``keys``) and screens drawn with rich (``screen``); imported only by ``menu``."""
