"""The online path: the Flask query service (issue #6). Nothing is loaded at import time."""
