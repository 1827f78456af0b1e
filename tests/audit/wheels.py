"""Build small real wheels for the audit tests: pure modules and a C extension."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    out: Path,
    name: str,
    files: Mapping[str, bytes],
    requires: Sequence[str] = (),
    tag: str = "py3-none-any",
) -> Path:
    """Write ``NAME-1.0-TAG.whl`` holding `files` and metadata requiring `requires`."""
    dist = name.replace("-", "_")
    info = f"{dist}-1.0.dist-info"
    metadata = "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n{}".format(
        name, "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    contents = {
        **files,
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: uvfs-tests\nRoot-Is-Purelib: "
            f"{'true' if tag.endswith('any') else 'false'}\nTag: {tag}\n"
        ).encode(),
    }
    record = "".join(f"{p},sha256={_digest(d)},{len(d)}\n" for p, d in contents.items())
    record += f"{info}/RECORD,,\n"
    wheel = out / f"{dist}-1.0-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in contents.items():
            z.writestr(path, data)
        z.writestr(f"{info}/RECORD", record)
    return wheel


YAMLVER_C = r"""
#include <Python.h>
extern const char *yaml_get_version_string(void);  /* libyaml, linked below */
static PyObject *version(PyObject *self, PyObject *args) {
    return PyUnicode_FromString(yaml_get_version_string());
}
static PyMethodDef methods[] = {{"version", version, METH_NOARGS, NULL}, {NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "yamlver", NULL, -1, methods};
PyMODINIT_FUNC PyInit_yamlver(void) { return PyModule_Create(&module); }
"""


def make_extension_wheel(out: Path) -> Path:
    """``yamlver``: a C extension whose .so links Debian's libyaml-0.so.2."""
    source = out / "yamlver.c"
    source.write_text(YAMLVER_C)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    so = out / f"yamlver{suffix}"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            f"-I{include}",
            "-o",
            str(so),
            str(source),
            "-l:libyaml-0.so.2",
        ],
        check=True,
    )
    major, minor = sys.version_info[:2]
    tag = f"cp{major}{minor}-cp{major}{minor}-linux_x86_64"
    return make_wheel(out, "yamlver", {so.name: so.read_bytes()}, tag=tag)
