"""Run by the audited interpreter (``python -c``): print its layout and distributions as JSON.

Standard library only, any Python from 3.8: this runs in the environment under audit,
not in uvfs's own.
"""

import glob
import json
import os
import platform
import site
import sys
import sysconfig
from importlib import metadata


def _files(dist):
    """Absolute paths of the files a distribution's RECORD lists, or None without one."""
    files = dist.files
    if files is None:
        return None
    base = os.path.realpath(str(dist.locate_file("")))
    return sorted({os.path.normpath(os.path.join(base, str(f))) for f in files})


def _metadata_dir(dist):
    path = getattr(dist, "_path", None)  # PathDistribution: the .dist-info directory
    return os.path.realpath(str(path)) if path is not None else None


def _marker_environment():
    # The names and values of PEP 508 environment markers, as packaging computes them.
    info = sys.implementation.version
    version = f"{info.major}.{info.minor}.{info.micro}"
    if info.releaselevel != "final":
        version += info.releaselevel[0] + str(info.serial)
    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def _interpreter_files():
    real = os.path.realpath(sys.executable)
    found = {sys.executable, real, os.path.join(sys.prefix, "pyvenv.cfg")}
    for prefix in {sys.prefix, sys.base_prefix}:
        for name in glob.glob(os.path.join(prefix, "bin", "python*")):
            if os.path.realpath(name) == real:
                found.add(name)
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname:
        found.add(os.path.realpath(os.path.join(libdir, soname)))
    return sorted(found)


def main():
    paths = sysconfig.get_paths()
    stdlib = {os.path.realpath(paths["stdlib"]), os.path.realpath(paths["platstdlib"])}
    site_dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        site_dirs.append(site.getusersitepackages())
    dists = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name is None:  # a broken .dist-info: nothing to own
            continue
        dists.append(
            {
                "name": name,
                "version": dist.version,
                "requires": dist.requires or [],
                "files": _files(dist),
                "metadata_dir": _metadata_dir(dist),
            }
        )
    json.dump(
        {
            "executable": sys.executable,
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
            "stdlib": sorted(stdlib),
            "site_packages": [os.path.realpath(d) for d in site_dirs],
            "interpreter_files": _interpreter_files(),
            "marker_environment": _marker_environment(),
            "distributions": dists,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
