"""The Qt application. Importing the package remembers Python's own ``__import__`` before PySide6
replaces it with its feature-import hook (see :mod:`app.plain_imports`)."""

import builtins

PLAIN_IMPORT = builtins.__import__
