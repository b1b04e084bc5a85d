"""Optional dependencies: one error, naming the extra that installs what is missing.

``import auditkeep`` needs only orjson and prometheus-client. What needs more
imports it where it is used and, when that fails, raises
``MissingDependencyError`` (also an ``ImportError``) with one line that says
what to install, instead of a bare ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

from auditkeep.exceptions import MissingDependencyError


def missing_dependency(
    exc: ImportError, *, module: str, extra: str, feature: str, package: str | None = None
) -> ImportError:
    """The error to raise for ``exc``, caught while importing ``module`` for ``feature``.

    ``package`` is the distribution to name when it is not called like the module
    (``protobuf`` installs ``google.protobuf``).

    An ``ImportError`` about something else (the dependency is there but
    broken) is handed back as it is, so that its own message is not hidden
    behind advice to install what is already installed.
    """
    if exc.name is not None and exc.name != module and not exc.name.startswith(module + "."):
        return exc
    return MissingDependencyError(
        f"{feature} needs {package or module}, which is not installed: "
        f"pip install 'auditkeep[{extra}]'",
        name=module,
        extra=extra,
    )
