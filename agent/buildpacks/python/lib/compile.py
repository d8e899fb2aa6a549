"""The Python buildpack's compile step (issue 19), as Heroku's: checks the Python the app asks
for against the stack's, installs the locked dependencies (requirements.txt, uv.lock,
Pipfile.lock, or pyproject's dependencies) with pip into /app/.venv, runs Django's collectstatic
and picks the default web command. The venv is restored from the dependency cache when the
lockfile is unchanged (the node keys the cache on it): nothing is downloaded or built then.
Without collectstatic and with no dependency on the app's own files, what it adds depends only on
the lockfile and the app's paths: it writes .paas/additive and the node may reuse the staged
layers when only the code changes (issue 24)."""
import glob
import json
import os
import shutil
import subprocess
import sys
import tomllib

APP, CACHE = sys.argv[1], sys.argv[2]
VENV = os.path.join(APP, ".venv")
CACHED = os.path.join(CACHE, "python", "venv")
STACK = os.environ.get("PAAS_STACK", "?")
HAVE = sys.version_info[:3]
HAVE_TEXT = "%d.%d.%d" % HAVE
# What each stack offers, so a mismatch says where the wanted version is.
OFFERED = "trixie has Python 3.13, bookworm has Python 3.11"


def say(msg):
    print("       " + msg, flush=True)


def fail(msg):
    print(msg, flush=True)
    sys.exit(1)


def path(name):
    return os.path.join(APP, name)


def read(name):
    with open(path(name), encoding="utf-8") as f:
        return f.read()


def check_version():
    """.python-version, runtime.txt or requires-python against the stack's Python."""
    from pip._vendor.packaging.specifiers import InvalidSpecifier, SpecifierSet

    def same_line(want, source):
        parts = want.split(".")
        if not all(p.isdigit() for p in parts) or len(parts) < 2:
            fail(f"{source} asks for Python {want!r}, which is not a version such as 3.13")
        if tuple(int(p) for p in parts) != HAVE[: len(parts)]:
            fail(
                f"{source} asks for Python {want} but stack {STACK} has Python {HAVE_TEXT} "
                f"({OFFERED}): change {source} or push with --stack"
            )

    if os.path.isfile(path(".python-version")):
        lines = [l.strip() for l in read(".python-version").splitlines()]
        want = next((l for l in lines if l and not l.startswith("#")), "")
        if want:
            same_line(want.removeprefix("python").removeprefix("-"), ".python-version")
    elif os.path.isfile(path("runtime.txt")):
        want = read("runtime.txt").strip()
        same_line(want.removeprefix("python-"), "runtime.txt")
    if os.path.isfile(path("pyproject.toml")):
        spec = pyproject().get("project", {}).get("requires-python")
        if spec:
            try:
                ok = SpecifierSet(spec).contains(HAVE_TEXT)
            except InvalidSpecifier:
                fail(f"pyproject.toml: requires-python {spec!r} is not a version specifier")
            if not ok:
                fail(
                    f"pyproject.toml requires-python {spec} but stack {STACK} has Python "
                    f"{HAVE_TEXT} ({OFFERED}): push with --stack or relax requires-python"
                )


_pyproject = None


def pyproject():
    global _pyproject
    if _pyproject is None:
        try:
            _pyproject = tomllib.loads(read("pyproject.toml"))
        except tomllib.TOMLDecodeError as e:
            fail(f"pyproject.toml: {e}")
    return _pyproject


def marker_ok(marker):
    if not marker:
        return True
    from pip._vendor.packaging.markers import Marker

    return Marker(marker).evaluate()


def uv_locked():
    """The packages uv.lock pins for this platform: from the project down its dependency edges,
    with each edge's marker evaluated here, production dependencies only."""
    try:
        lock = tomllib.loads(read("uv.lock"))
    except tomllib.TOMLDecodeError as e:
        fail(f"uv.lock: {e}")
    packages = {p["name"]: p for p in lock.get("package", [])}
    roots = [
        p
        for p in packages.values()
        if any(k in p.get("source", {}) for k in ("editable", "virtual", "directory"))
    ]
    pins, todo, seen = [], [d for r in roots for d in r.get("dependencies", [])], set()
    while todo:
        dep = todo.pop()
        name = dep["name"]
        if name in seen or not marker_ok(dep.get("marker")):
            continue
        seen.add(name)
        p = packages.get(name)
        if p is None:
            fail(f"uv.lock: {name} is a dependency but not locked: run `uv lock`")
        if "registry" in p.get("source", {}):
            pins.append(f"{name}=={p['version']}")
        todo.extend(p.get("dependencies", []))
    return sorted(pins)


def pipfile_locked():
    try:
        lock = json.loads(read("Pipfile.lock"))
    except json.JSONDecodeError as e:
        fail(f"Pipfile.lock: {e}")
    pins = []
    for name, p in sorted(lock.get("default", {}).items()):
        if not marker_ok(p.get("markers")):
            continue
        if "version" not in p:
            fail(f"Pipfile.lock: {name} has no pinned version (a path or VCS dependency)")
        pins.append(f"{name}{p['version']}")
    return pins


def requirements():
    """(pip arguments, what they came from, whether the set is complete), first found wins."""
    if os.path.isfile(path("requirements.txt")):
        return ["-r", path("requirements.txt")], "requirements.txt", False
    pins, source = None, None
    if os.path.isfile(path("uv.lock")):
        pins, source = uv_locked(), "uv.lock"
    elif os.path.isfile(path("Pipfile.lock")):
        pins, source = pipfile_locked(), "Pipfile.lock"
    if pins is not None:
        # A lock names every package: nothing else may be pulled in.
        return pins, source, True
    if os.path.isfile(path("pyproject.toml")):
        deps = pyproject().get("project", {}).get("dependencies", [])
        return list(deps), "pyproject.toml", False
    return [], None, False


def pip(*args):
    cmd = [os.path.join(VENV, "bin", "pip"), "install", "--disable-pip-version-check",
           "--no-input", "--progress-bar", "off", *args]
    vendor = glob.glob(path("vendor/*.whl"))
    if vendor:
        # Vendored wheels (`pip download -d vendor`) install offline.
        cmd[3:3] = ["--no-index", "--find-links", path("vendor")]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in r.stdout.splitlines():
        if line.startswith(("Collecting", "Successfully", "ERROR", "Looking in")):
            say(line)
    if r.returncode != 0:
        # pip's own reason is its last ERROR line: that is what the push reports.
        errors = [l for l in r.stdout.splitlines() if l.startswith("ERROR")]
        print("\n".join(r.stdout.splitlines()[-15:]), flush=True)
        fail("pip could not install the dependencies: " + (errors[-1] if errors else "see above"))


def install():
    args, source, locked = requirements()
    if source is None:
        say("No dependencies declared")
        return
    if os.path.isfile(os.path.join(CACHED, ".complete")):
        # The restored entry is this build's own copy: moved, not copied (a venv is thousands
        # of files), and not stored again.
        try:
            os.rename(CACHED, VENV)
        except OSError:
            shutil.copytree(CACHED, VENV, symlinks=True)
        os.remove(os.path.join(VENV, ".complete"))
        say(f"Restored the dependencies of {source} from the cache")
        return
    say(f"Installing dependencies from {source}")
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    if args:
        pip(*(["--no-deps"] if locked else []), *args)
    if os.path.isdir(CACHE) and os.access(CACHE, os.W_OK):
        shutil.rmtree(CACHED, ignore_errors=True)
        shutil.copytree(VENV, CACHED, symlinks=True)
        open(os.path.join(CACHED, ".complete"), "w").close()


def venv_has(module):
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        return False
    r = subprocess.run([py, "-c", f"import {module}"], capture_output=True)
    return r.returncode == 0


COLLECTED = False


def local_dependencies():
    """Whether the declared dependencies read the app's own files (a path, an editable install,
    another requirements or constraints file): the venv then depends on more than the files
    the node keys its caches on."""
    if os.path.isfile(path("requirements.txt")):
        for line in read("requirements.txt").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("-e", "--editable", "-r", "--requirement", "-c", "--constraint",
                                ".", "/", "file:")) or "file:" in line:
                return True
        return False
    if os.path.isfile(path("uv.lock")) or os.path.isfile(path("Pipfile.lock")):
        # Registry pins only (uv_locked, pipfile_locked).
        return False
    if os.path.isfile(path("pyproject.toml")):
        deps = pyproject().get("project", {}).get("dependencies", [])
        return any("file:" in d for d in deps)
    return False


def django():
    """Heroku's Django support: collectstatic at staging, gunicorn on the project's WSGI app."""
    if not os.path.isfile(path("manage.py")) or not venv_has("django"):
        return None
    if os.environ.get("DISABLE_COLLECTSTATIC") != "1":
        global COLLECTED
        COLLECTED = True
        say("Running python manage.py collectstatic --noinput")
        r = subprocess.run(
            [os.path.join(VENV, "bin", "python"), "manage.py", "collectstatic", "--noinput"],
            cwd=APP, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for line in r.stdout.splitlines()[-5:]:
            say(line)
        if r.returncode != 0:
            fail("collectstatic failed (set STATIC_ROOT in settings, or DISABLE_COLLECTSTATIC=1)")
    wsgi = sorted(glob.glob(path("*/wsgi.py")))
    if wsgi and venv_has("gunicorn"):
        module = os.path.basename(os.path.dirname(wsgi[0])) + ".wsgi"
        return f"gunicorn {module} --bind 0.0.0.0:$PORT"
    return None


def main():
    say(f"Using Python {HAVE_TEXT} (stack {STACK})")
    check_version()
    install()
    web = django()
    if web is None:
        if os.path.isfile(path("app.py")):
            web = "exec python3 app.py"
        elif os.path.isfile(path("Procfile")):
            web = ""
        else:
            fail("no web command: add a Procfile (web: ...) or an app.py")
    os.makedirs(path(".paas"), exist_ok=True)
    with open(path(".paas/python-web"), "w") as f:
        f.write(web + "\n")
    if web:
        say("Default web command: " + web)
    if not COLLECTED and not local_dependencies():
        open(path(".paas/additive"), "w").close()


main()
