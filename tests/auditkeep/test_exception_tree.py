"""One exception tree: every exception class of the library is an ``auditkeep.AuditError``.

The walk imports every module of the package; the static scan reads every
``raise`` in its source, so a new ad-hoc exception (``raise ImportError(...)``,
``raise Exception(...)``, a class outside the tree) fails here.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
from pathlib import Path

import auditkeep
from auditkeep import AuditError, exceptions

SRC = Path(auditkeep.__file__).resolve().parent
# Built-in exceptions the library may raise, and why each is not an AuditError:
ALLOWED_BUILTINS = {
    "ValueError": "an argument of the wrong value, as the standard library raises it",
    "TypeError": "an argument of the wrong type",
    "RuntimeError": "called in the wrong state (audited() re-entered, SIGHUP off the main thread)",
    "FileNotFoundError": "the OS's own error for a file sink's missing directory",
    "EOFError": "a truncated gzip member inside the query reader, caught there",
    "AssertionError": "unreachable code",
    "NotImplementedError": "an abstract method of an internal base class",
    "SystemExit": "the SIGTERM handler's way to run atexit (runtime.py)",
    "FileExistsError": "the OS's own error for a demo folder holding files the demo did not write",
}


def library_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(auditkeep.__path__, "auditkeep."))


def library_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in ["auditkeep", *library_modules()]:
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("auditkeep"):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def raised_names() -> list[tuple[str, str]]:
    """(file:line, name) of every ``raise Name(...)`` / ``raise Name`` in the library's source."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name):
                found.append((f"{path.relative_to(SRC)}:{node.lineno}", target.id))
    return found


class TestExceptionTree:
    def test_every_exception_class_is_under_audit_error(self) -> None:
        """Walk every module: each exception class defined in the library is an AuditError."""
        outside = sorted(
            name
            for name, cls in library_exception_classes().items()
            if not issubclass(cls, AuditError)
        )
        assert outside == []

    def test_every_exception_class_lives_in_exceptions_and_is_exported(self) -> None:
        """One home (auditkeep/exceptions.py), importable from ``auditkeep`` itself."""
        classes = library_exception_classes()
        assert {cls.__module__ for cls in classes.values()} == {"auditkeep.exceptions"}
        assert {cls.__name__ for cls in classes.values()} <= set(auditkeep.__all__)

    def test_the_documented_tree_names_every_class(self) -> None:
        """The tree drawn in exceptions.py's docstring lists every class, under its parent."""
        doc = exceptions.__doc__ or ""
        classes = library_exception_classes().values()
        assert sorted(c.__name__ for c in classes if c.__name__ not in doc) == []
        lines = doc.splitlines()
        for cls in classes:
            if cls is AuditError:
                continue
            (line,) = [i for i, text in enumerate(lines) if f"── {cls.__name__} " in text]
            parent = cls.__mro__[1].__name__
            above = [text for text in lines[:line] if "──" in text or text.strip() == "AuditError"]
            depth = lines[line].index("──")
            # The nearest line above that is one level shallower names the parent.
            shallower = [t for t in above if t.find("──") < depth]
            assert parent in shallower[-1], (cls.__name__, parent)

    def test_the_walk_covers_the_tree(self) -> None:
        """The walk reached the modules that define or raise the spool and query errors."""
        names = set(library_modules())
        assert {
            "auditkeep.delivery.spool",
            "auditkeep.query._reader",
            "auditkeep.exceptions",
        } <= names
        assert {c.__name__ for c in library_exception_classes().values()} >= {
            "SpoolFullError",
            "SpoolWriteError",
            "SpoolSyncError",
            "InputError",
            "MissingDependencyError",
        }

    def test_every_raise_is_an_audit_error_or_an_allowed_builtin(self) -> None:
        """No module raises an exception of its own outside the tree, or an unlisted built-in."""
        problems = []
        for where, name in raised_names():
            value = getattr(auditkeep, name, None) or getattr(builtins, name, None)
            if isinstance(value, type) and issubclass(value, AuditError):
                continue
            if name in ALLOWED_BUILTINS:
                continue
            if value is None and not name[0].isupper():
                continue  # a variable holding an exception, re-raised
            problems.append(f"{where}: raise {name}")
        assert problems == []
