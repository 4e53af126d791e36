"""PyInstaller runtime hook: placeholders for packages the bundle leaves out on purpose.

transformer_lens imports ``datasets`` (and through it ``pandas`` and ``pyarrow``) at module level
for its dataset and evaluation helpers (``utils.get_dataset``, ``evals``, ``patching``'s
DataFrame helpers). Lensbench never calls them, and the three packages would add ~260 MB to the
bundle. This hook lets those module-level imports succeed with a placeholder module, for
importers inside transformer_lens only; using anything from a placeholder raises ImportError
that says what is missing. Every other importer gets the normal ModuleNotFoundError.

The finder sits at the end of ``sys.meta_path``, so a real installed package always wins.
"""

import importlib.abc
import importlib.machinery
import sys
import types

_ABSENT = ("datasets", "pandas", "pyarrow")
_ALLOWED_IMPORTERS = ("transformer_lens",) + _ABSENT


def _message(name: str) -> str:
    return (f"{name} is not included in the Lensbench app (it is only needed by "
            f"TransformerLens's dataset helpers, which Lensbench does not use).")


class _Missing:
    """Stands in for any class or function of an absent package."""

    _lensbench_absent = ""

    def __init__(self, *args, **kwargs) -> None:
        raise ImportError(_message(self._lensbench_absent))

    def __class_getitem__(cls, item):  # allows annotations like Dataset[str]
        return cls


def _make_missing(module: str, attr: str) -> type:
    return type(attr, (_Missing,), {"_lensbench_absent": module.split(".")[0],
                                    "__module__": module, "__qualname__": attr})


class _AbsentModule(types.ModuleType):
    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = _make_missing(self.__name__, attr)
        setattr(self, attr, value)
        return value


def _importer_name() -> str:
    """The module whose import statement is being served (import machinery frames skipped)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        machinery = name.startswith(("importlib", "_frozen_importlib")) or name == __name__ \
            or frame.f_code.co_name in ("find_spec", "_find_spec")
        if not machinery:
            return name
        frame = frame.f_back
    return ""


class _AbsentFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in _ABSENT:
            return None
        if not _importer_name().startswith(_ALLOWED_IMPORTERS):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = _AbsentModule(spec.name)
        module.__path__ = []
        module.__lensbench_absent__ = True
        return module

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, _AbsentFinder) for f in sys.meta_path):
        sys.meta_path.append(_AbsentFinder())


install()
