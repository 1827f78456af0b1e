/*
 * ZLE (zero-length encoding) decompression (module/zfs/zle.c), as a C extension.
 *
 * The stream is runs: a length byte `n` below 64 is followed by `n + 1` literal bytes,
 * a length byte of 64 or more stands for `n - 63` zero bytes. The output must come out at
 * exactly the logical size, and a run may not overrun the source or the output: anything
 * else is ZleError, never garbage (the same rules as compress.zle_decompress, the Python
 * reference that the tests compare this with).
 *
 * Why C: a half-zero 128 KiB block is a thousand runs, which the Python loop decodes in
 * about a millisecond; here the runs are memcpy and memset, some microseconds in all.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define ZLE_LEVEL 64

static PyObject *ZleError;

static const char *
zle_decompress(const unsigned char *src, Py_ssize_t slen, unsigned char *dst, Py_ssize_t dlen)
{
    Py_ssize_t s = 0, o = 0;
    while (s < slen && o < dlen) {
        Py_ssize_t len = (Py_ssize_t)src[s++] + 1;
        if (len <= ZLE_LEVEL) {
            if (len > slen - s || len > dlen - o)
                return "literal run overruns the block";
            memcpy(dst + o, src + s, len);
            s += len;
        } else {
            len -= ZLE_LEVEL;
            if (len > dlen - o)
                return "zero run overruns the block";
            memset(dst + o, 0, len);
        }
        o += len;
    }
    return o == dlen ? NULL : "stream ends before the logical size";
}

static PyObject *
decompress(PyObject *module, PyObject *args)
{
    Py_buffer src;
    Py_ssize_t lsize;
    if (!PyArg_ParseTuple(args, "y*n:decompress", &src, &lsize))
        return NULL;
    if (lsize < 0) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "negative logical size");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, lsize);
    if (out == NULL) {
        PyBuffer_Release(&src);
        return NULL;
    }
    const char *error;
    Py_BEGIN_ALLOW_THREADS
    error = zle_decompress(src.buf, src.len, (unsigned char *)PyBytes_AS_STRING(out), lsize);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    if (error != NULL) {
        Py_DECREF(out);
        PyErr_SetString(ZleError, error);
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"decompress", decompress, METH_VARARGS,
     "decompress(src, lsize) -> bytes: exactly lsize bytes; ZleError when src is corrupt."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_zle", "ZLE decompression (ZFS).", -1, methods,
};

PyMODINIT_FUNC
PyInit__zle(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    ZleError = PyErr_NewExceptionWithDoc(
        "uvfs_fs.zfs._zle.ZleError", "The stream is corrupt.", PyExc_ValueError, NULL);
    if (ZleError == NULL || PyModule_AddObjectRef(m, "ZleError", ZleError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
