"""Check that the locks still satisfy what the project asks for (run by scripts/check).

    python scripts/lock_check.py              # the locks against pyproject.toml
    python scripts/lock_check.py --installed  # ...and this interpreter's packages against them
    python scripts/lock_check.py --extraneous # the installed packages the lock lacks

For every supported Python on Linux x86-64, each requirement of pyproject.toml (the package's
dependencies and its `dev` extra) must be pinned exactly once in requirements/dev.lock, at a
version its range admits; the same for requirements-lean.txt in requirements/lean.lock, whose
pins must equal dev.lock's. `--installed` also fails when a locked package is installed at
another version than the lock's (the tests would not be running on the lock).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from importlib.metadata import Distribution, distributions
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a bare venv (scripts/lock's own): pip carries a copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
LOCKS = REPO / "requirements"
#: The Pythons the locks are checked for (pyproject.toml: requires-python >= 3.10).
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
Pins = dict[str, str]


def linux_x86_64(python: str) -> dict[str, str]:
    env = dict(default_environment())
    env.update(
        python_version=python, python_full_version=f"{python}.0", sys_platform="linux",
        platform_system="Linux", platform_machine="x86_64", os_name="posix",
        implementation_name="cpython", platform_python_implementation="CPython",
    )  # fmt: skip
    return env


def read_lock(path: Path) -> list[Requirement]:
    """The pins of a lock written by `uv pip compile` (one `name==version ; marker \\` a
    package, its hashes and comments on the indented lines below)."""
    pins = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line and not line[0].isspace() and not line.startswith(("#", "-")):
            text = line.rstrip(" \\")
            try:
                req = Requirement(text)
            except ValueError as exc:
                raise SystemExit(f"{path.name}:{number}: not a requirement: {exc}") from None
            specs = list(req.specifier)
            if req.url or len(specs) != 1 or specs[0].operator != "==":
                raise SystemExit(f"{path.name}:{number}: not an exact pin: {text}")
            pins.append(req)
    return pins


def pins_for(lock: list[Requirement], env: dict[str, str], name: str) -> Pins:
    """The lock's pins that apply in `env`; two pins of one package there is an error."""
    pins: Pins = {}
    for req in lock:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        key = canonicalize_name(req.name)
        (spec,) = req.specifier
        if key in pins:
            raise SystemExit(f"{name}: {key} is pinned twice for Python {env['python_version']}")
        pins[key] = spec.version
    return pins


def read_requirements(lines: Iterable[str]) -> list[Requirement]:
    reqs = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(Requirement(line))
    return reqs


def wanted() -> tuple[list[Requirement], list[Requirement]]:
    """What dev.lock and lean.lock must satisfy."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    build = read_requirements((LOCKS / "build.in").read_text(encoding="utf-8").splitlines())
    constraints = (LOCKS / "constraints.in").read_text(encoding="utf-8").splitlines()
    dev = [
        *read_requirements(project["dependencies"]),
        *read_requirements(project["optional-dependencies"]["dev"]),
        *read_requirements(constraints),
        *build,
    ]
    lean_lines = (REPO / "requirements-lean.txt").read_text(encoding="utf-8").splitlines()
    return dev, [*read_requirements(lean_lines), *build]


def unmet(reqs: list[Requirement], pins: Pins, env: dict[str, str]) -> list[str]:
    problems = []
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req} is locked at {pinned}")
    return problems


def check_locks() -> list[str]:
    dev_wanted, lean_wanted = wanted()
    dev_lock, lean_lock = read_lock(LOCKS / "dev.lock"), read_lock(LOCKS / "lean.lock")
    problems = []
    for python in PYTHONS:
        env = linux_x86_64(python)
        dev, lean = pins_for(dev_lock, env, "dev.lock"), pins_for(lean_lock, env, "lean.lock")
        where = f"Python {python}"
        problems += [f"dev.lock, {where}: {p}" for p in unmet(dev_wanted, dev, env)]
        problems += [f"lean.lock, {where}: {p}" for p in unmet(lean_wanted, lean, env)]
        problems += [
            f"lean.lock, {where}: {name}=={version} but dev.lock has {dev[name]}"
            for name, version in lean.items()
            if name in dev and dev[name] != version
        ]
    return problems


def this_environment() -> tuple[dict[str, str], Pins, dict[str, Distribution]]:
    """This interpreter's markers, dev.lock's pins for it, and its installed packages."""
    env = dict(default_environment())
    lock = pins_for(read_lock(LOCKS / "dev.lock"), env, "dev.lock")
    installed = {canonicalize_name(d.metadata["Name"]): d for d in distributions()}
    return env, lock, installed


def check_installed() -> list[str]:
    """This interpreter's packages against the lock: each locked one installed at its pin,
    none that the lock lacks, and every requirement of clipsearch[dev] met, extras
    (psycopg[binary]) and indirect ones included."""
    env, lock, installed = this_environment()
    problems = []
    for name, pin in sorted(lock.items()):
        if name not in installed:
            problems.append(f"{name}=={pin} is in the lock but not installed")
        elif installed[name].version != pin:
            problems.append(f"{name} {installed[name].version} is installed, the lock has {pin}")
    problems += [f"{n} is installed but not in the lock" for n in extraneous(installed, lock)]
    problems += unmet_closure(installed, env)
    return problems


def extraneous(installed: dict[str, Distribution], lock: Pins) -> list[str]:
    return sorted(set(installed) - set(lock) - {"clipsearch", "pip"})


def unmet_closure(installed: dict[str, Distribution], env: dict[str, str]) -> list[str]:
    """Walk clipsearch[dev]'s requirements through the installed metadata."""
    problems, seen = [], set()
    todo: list[tuple[str, frozenset[str]]] = [("clipsearch", frozenset({"dev"}))]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name not in installed:
            continue
        seen.add((name, extras))
        for line in installed[name].requires or []:
            req = Requirement(line)
            applies = req.marker is None or any(
                req.marker.evaluate({**env, "extra": extra}) for extra in ("", *extras)
            )
            if not applies:
                continue
            dep = canonicalize_name(req.name)
            found = installed.get(dep)
            if found is None:
                problems.append(f"{name} needs {req}, which is not installed")
            elif not req.specifier.contains(found.version, prereleases=True):
                problems.append(f"{name} needs {req}, {found.version} is installed")
            else:
                todo.append((dep, frozenset(req.extras)))
    return problems


def main(argv: list[str]) -> int:
    problems = check_locks()
    if problems:
        print(
            "The locks no longer satisfy pyproject.toml / requirements-lean.txt:", file=sys.stderr
        )
        print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
        print("Run `bash scripts/lock` (README: Development, updating the lock).", file=sys.stderr)
        return 1
    if "--extraneous" in argv:  # for scripts/setup: what to uninstall from a reused .venv
        _, lock, installed = this_environment()
        for name in extraneous(installed, lock):
            print(name)
        return 0
    if "--installed" in argv:
        problems = check_installed()
        if problems:
            print(f"{sys.prefix} is not the lock's environment:", file=sys.stderr)
            print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
            print("Run `bash scripts/setup` to install the lock.", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
