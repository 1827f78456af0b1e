/*
 * LZJB decompression, the original ZFS compressor (module/zfs/lzjb.c), as a C extension.
 *
 * The stream is groups of one copy-map byte and eight items, least significant bit first:
 * a clear bit is one literal byte, a set bit a two-byte match `mlen:6 offset:10` (big
 * endian) copying `mlen + 3` bytes from `offset` bytes back in the output; the copy runs
 * byte by byte, so an offset shorter than the length repeats the copied bytes. Output stops
 * at the logical size wherever it falls, as upstream.
 *
 * Why C: the format is a byte loop, which CPython runs at a few MB/s; here it runs at
 * about a GB/s (groups of eight literals and matches are whole copies), without the GIL,
 * so blocks decompress in worker threads in parallel with the broker. Unlike upstream,
 * every source read is bounds-checked and a match reaching before the output's start is
 * an error: a hostile image gets LzjbError, never garbage.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *LzjbError;

static const char *
lzjb_decompress(const unsigned char *src, Py_ssize_t slen, unsigned char *dst, Py_ssize_t dlen)
{
    const unsigned char *s = src, *end = src + slen;
    Py_ssize_t o = 0;
    unsigned int copymap = 0, copymask = 1 << 7;

    while (o < dlen) {
        if ((copymask <<= 1) == (1 << 8)) {
            copymask = 1;
            if (s >= end)
                return "ends early";
            copymap = *s++;
            if (copymap == 0 && end - s >= 8 && dlen - o >= 8) {
                /* A group of eight literals (incompressible data): one copy. */
                memcpy(dst + o, s, 8);
                o += 8;
                s += 8;
                copymask = 1 << 7;
                continue;
            }
        }
        if (copymap & copymask) {
            if (end - s < 2)
                return "ends inside a match";
            Py_ssize_t mlen = (s[0] >> 2) + 3;
            Py_ssize_t offset = ((s[0] << 8) | s[1]) & 0x3ff;
            s += 2;
            if (offset == 0 || offset > o)
                return "has a match reaching before the output";
            if (mlen > dlen - o)
                mlen = dlen - o;
            /* The match repeats the last `offset` bytes: copy them in doubling chunks,
             * each one ending where it starts to overlap its source (a run of zeros is a
             * match at offset 1: a few copies, not a byte loop). */
            const unsigned char *from = dst + o - offset;
            unsigned char *to = dst + o;
            o += mlen;
            while (mlen > 0) {
                Py_ssize_t n = to - from < mlen ? to - from : mlen;
                memcpy(to, from, n);
                to += n;
                mlen -= n;
            }
        } else {
            if (s >= end)
                return "ends early";
            dst[o++] = *s++;
        }
    }
    return NULL;
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
    error = lzjb_decompress(src.buf, src.len, (unsigned char *)PyBytes_AS_STRING(out), lsize);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    if (error != NULL) {
        Py_DECREF(out);
        PyErr_Format(LzjbError, "lzjb stream %s", error);
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"decompress", decompress, METH_VARARGS,
     "decompress(src, lsize) -> bytes: exactly lsize bytes; LzjbError when src is corrupt."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lzjb", "LZJB decompression (ZFS).", -1, methods,
};

PyMODINIT_FUNC
PyInit__lzjb(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    LzjbError = PyErr_NewExceptionWithDoc(
        "uvfs_fs.zfs._lzjb.LzjbError", "The stream is corrupt.", PyExc_ValueError, NULL);
    if (LzjbError == NULL || PyModule_AddObjectRef(m, "LzjbError", LzjbError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
