/*
 * ZFS's byte loops as one C extension: LZJB and ZLE compression and decompression and the
 * Fletcher checksums.
 * Each algorithm below is plain C on a buffer; the Python glue (argument parsing, the GIL,
 * the error classes) is written once, at the end, for all of them.
 *
 * Why C: CPython runs byte loops at a few MB/s; the reasons per algorithm follow.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <endian.h>
#include <stdint.h>
#include <string.h>

/* ---- LZJB --------------------------------------------------------------------------------
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
                return "lzjb stream ends early";
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
                return "lzjb stream ends inside a match";
            Py_ssize_t mlen = (s[0] >> 2) + 3;
            Py_ssize_t offset = ((s[0] << 8) | s[1]) & 0x3ff;
            s += 2;
            if (offset == 0 || offset > o)
                return "lzjb stream has a match reaching before the output";
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
                return "lzjb stream ends early";
            dst[o++] = *s++;
        }
    }
    return NULL;
}

/*
 * LZJB compression (the writer's side): at each position the three bytes ahead are hashed
 * into a 1024-entry table of the positions last seen with that hash (mod 2^16); if the
 * bytes at the remembered position (within 1023 bytes back) equal them, the longest match
 * up to 66 bytes becomes a two-byte copy item, otherwise the byte is a literal. The last
 * 66 bytes of the block are always literals. Upstream stores the low bits of source
 * *addresses* in the table, so its output depends on the buffer's alignment; positions
 * here are those of a buffer aligned to 1 KiB (the kernel's page-aligned buffers), which
 * gives upstream's exact bytes for its own blocks. Like upstream, it gives up (returns
 * -1) at a group boundary once the output comes within 17 bytes of `dlen`, so the same
 * blocks fail to compress as there.
 *
 * Why C: a byte loop with a hash per position, as the decoder.
 */

#define LZJB_MATCH_MIN 3
#define LZJB_MATCH_MAX 66 /* (1 << 6) + LZJB_MATCH_MIN - 1 */
#define LZJB_OFFSET_MASK 0x3ff
#define LZJB_LEMPEL_SIZE 1024

static Py_ssize_t
lzjb_compress(const unsigned char *src, Py_ssize_t slen, unsigned char *dst, Py_ssize_t dlen)
{
    uint16_t lempel[LZJB_LEMPEL_SIZE] = {0};
    Py_ssize_t s = 0, d = 0, map = 0;
    unsigned int copymask = 1 << 7;

    while (s < slen) {
        if ((copymask <<= 1) == (1 << 8)) {
            if (d >= dlen - 1 - 16) /* a group (map byte + 8 matches) might not fit */
                return -1;
            copymask = 1;
            map = d;
            dst[d++] = 0;
        }
        if (s > slen - LZJB_MATCH_MAX) {
            dst[d++] = src[s++];
            continue;
        }
        unsigned int hash = (src[s] << 16) + (src[s + 1] << 8) + src[s + 2];
        hash += hash >> 9;
        hash += hash >> 5;
        uint16_t *hp = &lempel[hash & (LZJB_LEMPEL_SIZE - 1)];
        Py_ssize_t offset = (Py_ssize_t)((uint16_t)s - *hp) & LZJB_OFFSET_MASK;
        *hp = (uint16_t)s;
        const unsigned char *cpy = src + s - offset;
        if (offset != 0 && offset <= s && memcmp(src + s, cpy, LZJB_MATCH_MIN) == 0) {
            Py_ssize_t mlen = LZJB_MATCH_MIN;
            while (mlen < LZJB_MATCH_MAX && src[s + mlen] == cpy[mlen])
                mlen++;
            dst[map] |= copymask;
            dst[d++] = ((mlen - LZJB_MATCH_MIN) << 2) | (offset >> 8);
            dst[d++] = offset & 0xff;
            s += mlen;
        } else {
            dst[d++] = src[s++];
        }
    }
    return d;
}

/* ---- ZLE ---------------------------------------------------------------------------------
 * The stream is runs: a length byte `n` below 64 is followed by `n + 1` literal bytes,
 * a length byte of 64 or more stands for `n - 63` zero bytes. The output must come out at
 * exactly the logical size, and a run may not overrun the source or the output: anything
 * else is ZleError, never garbage (the same rules as compress.zle_decompress, the Python
 * reference that the tests compare this with).
 *
 * Why C: a half-zero 128 KiB block is a thousand runs, which the Python loop decodes in
 * about a millisecond; here the runs are memcpy and memset, some microseconds in all.
 */

#define ZLE_LEVEL 64

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

/*
 * ZLE compression: a run of zeros (up to 192) becomes one length byte; anything else is
 * a literal run of up to 64 bytes that ends before two zeros in a row (a lone zero stays
 * inside it). Returns -1 when the output would not fit in `dlen` (the output's
 * layout, run boundaries included, is upstream's, so a block compresses to its bytes).
 *
 * Why C: the same byte loop as the decoder.
 */

static Py_ssize_t
zle_compress(const unsigned char *src, Py_ssize_t slen, unsigned char *dst, Py_ssize_t dlen)
{
    Py_ssize_t s = 0, d = 0;
    while (s < slen && d < dlen - 1) {
        Py_ssize_t first = s, len_at = d++;
        if (src[s] == 0) {
            Py_ssize_t last = first + 256 - ZLE_LEVEL < slen ? first + 256 - ZLE_LEVEL : slen;
            while (s < last && src[s] == 0)
                s++;
            dst[len_at] = (unsigned char)(s - first - 1 + ZLE_LEVEL);
        } else {
            Py_ssize_t last = first + ZLE_LEVEL < slen ? first + ZLE_LEVEL : slen;
            if (dlen - d < ZLE_LEVEL)
                break;
            while (s < last - 1 && (src[s] | src[s + 1]))
                dst[d++] = src[s++];
            if (src[s])
                dst[d++] = src[s++];
            dst[len_at] = (unsigned char)(s - first - 1);
        }
    }
    return s == slen ? d : -1;
}

/* ---- Fletcher ----------------------------------------------------------------------------
 * fletcher_4 sums 32-bit words, fletcher_2 pairs of 64-bit words; each running sum adds
 * the one before it, all wrapping at 2^64. The words are read in the block's byte order
 * (the `bigendian` argument), whatever the host's, as the _byteswap variants upstream do.
 * A trailing partial word is ignored, as upstream (blocks are whole sectors).
 *
 * Why C: checksum.py's numpy version (the reference, which the tests compare this with)
 * makes four passes over 64-bit temporaries and spends ~0.4 ms on a 128 KiB block, more
 * than reading it; this single pass takes a few dozen microseconds, so zio runs it inline
 * instead of paying for a worker thread. The GIL is released all the same, for the
 * megabyte blocks that zio still sends to a thread.
 */

static void
fletcher4(const unsigned char *p, Py_ssize_t len, int big, uint64_t out[4])
{
    uint64_t a = 0, b = 0, c = 0, d = 0;
    Py_ssize_t n = len / 4;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t w;
        memcpy(&w, p + 4 * i, 4);
        a += big ? be32toh(w) : le32toh(w);
        b += a;
        c += b;
        d += c;
    }
    out[0] = a, out[1] = b, out[2] = c, out[3] = d;
}

static void
fletcher2(const unsigned char *p, Py_ssize_t len, int big, uint64_t out[4])
{
    uint64_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;
    Py_ssize_t n = len / 16;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t w[2];
        memcpy(w, p + 16 * i, 16);
        a0 += big ? be64toh(w[0]) : le64toh(w[0]);
        a1 += big ? be64toh(w[1]) : le64toh(w[1]);
        b0 += a0;
        b1 += a1;
    }
    out[0] = a0, out[1] = a1, out[2] = b0, out[3] = b1;
}

/* ---- Python glue ------------------------------------------------------------------------ */

static PyObject *LzjbError, *ZleError;

typedef const char *(*decoder_fn)(const unsigned char *, Py_ssize_t, unsigned char *, Py_ssize_t);

/* decompress(src, lsize) by `decoder`: exactly lsize bytes, or `error_class` with its message. */
static PyObject *
decompress(PyObject *args, const char *format, decoder_fn decoder, PyObject *error_class)
{
    Py_buffer src;
    Py_ssize_t lsize;
    if (!PyArg_ParseTuple(args, format, &src, &lsize))
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
    error = decoder(src.buf, src.len, (unsigned char *)PyBytes_AS_STRING(out), lsize);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    if (error != NULL) {
        Py_DECREF(out);
        PyErr_SetString(error_class, error);
        return NULL;
    }
    return out;
}

static PyObject *
py_lzjb_decompress(PyObject *module, PyObject *args)
{
    return decompress(args, "y*n:lzjb_decompress", lzjb_decompress, LzjbError);
}

static PyObject *
py_zle_decompress(PyObject *module, PyObject *args)
{
    return decompress(args, "y*n:zle_decompress", zle_decompress, ZleError);
}

typedef Py_ssize_t (*encoder_fn)(const unsigned char *, Py_ssize_t, unsigned char *, Py_ssize_t);

/* compress(src, dlen) by `encoder`: the stream (at most dlen bytes), or None when the
 * encoder gives up because it would not fit. */
static PyObject *
compress(PyObject *args, const char *format, encoder_fn encoder)
{
    Py_buffer src;
    Py_ssize_t dlen;
    if (!PyArg_ParseTuple(args, format, &src, &dlen))
        return NULL;
    if (dlen < 0) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "negative output size");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, dlen);
    if (out == NULL) {
        PyBuffer_Release(&src);
        return NULL;
    }
    Py_ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = encoder(src.buf, src.len, (unsigned char *)PyBytes_AS_STRING(out), dlen);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    if (n < 0) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&out, n) < 0)
        return NULL;
    return out;
}

static PyObject *
py_lzjb_compress(PyObject *module, PyObject *args)
{
    return compress(args, "y*n:lzjb_compress", lzjb_compress);
}

static PyObject *
py_zle_compress(PyObject *module, PyObject *args)
{
    return compress(args, "y*n:zle_compress", zle_compress);
}

typedef void (*fletcher_fn)(const unsigned char *, Py_ssize_t, int, uint64_t[4]);

/* fletcherN(data, bigendian) by `fn`: its four words as a tuple. */
static PyObject *
checksum(PyObject *args, const char *format, fletcher_fn fn)
{
    Py_buffer data;
    int big;
    uint64_t out[4];
    if (!PyArg_ParseTuple(args, format, &data, &big))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    fn(data.buf, data.len, big, out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return Py_BuildValue("(KKKK)", (unsigned long long)out[0], (unsigned long long)out[1],
                         (unsigned long long)out[2], (unsigned long long)out[3]);
}

static PyObject *
py_fletcher4(PyObject *module, PyObject *args)
{
    return checksum(args, "y*p:fletcher4", fletcher4);
}

static PyObject *
py_fletcher2(PyObject *module, PyObject *args)
{
    return checksum(args, "y*p:fletcher2", fletcher2);
}

static PyMethodDef methods[] = {
    {"lzjb_decompress", py_lzjb_decompress, METH_VARARGS,
     "lzjb_decompress(src, lsize) -> bytes: exactly lsize bytes; LzjbError when src is corrupt."},
    {"zle_decompress", py_zle_decompress, METH_VARARGS,
     "zle_decompress(src, lsize) -> bytes: exactly lsize bytes; ZleError when src is corrupt."},
    {"lzjb_compress", py_lzjb_compress, METH_VARARGS,
     "lzjb_compress(src, dlen) -> bytes | None: the stream, or None if it would not fit dlen."},
    {"zle_compress", py_zle_compress, METH_VARARGS,
     "zle_compress(src, dlen) -> bytes | None: the stream, or None if it would not fit dlen."},
    {"fletcher4", py_fletcher4, METH_VARARGS,
     "fletcher4(data, bigendian) -> (a, b, c, d): fletcher_4 over 32-bit words."},
    {"fletcher2", py_fletcher2, METH_VARARGS,
     "fletcher2(data, bigendian) -> (a0, a1, b0, b1): fletcher_2 over 64-bit word pairs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "ZFS compression, decompression and checksums in C.", -1, methods,
};

/* A ValueError subclass named `name` (uvfs_fs.zfs._native.NAME), added to `m`; NULL on error. */
static PyObject *
add_error(PyObject *m, const char *name)
{
    char qualified[64];
    PyOS_snprintf(qualified, sizeof qualified, "uvfs_fs.zfs._native.%s", name);
    PyObject *error = PyErr_NewExceptionWithDoc(
        qualified, "The stream is corrupt.", PyExc_ValueError, NULL);
    if (error == NULL || PyModule_AddObjectRef(m, name, error) < 0) {
        Py_XDECREF(error);
        return NULL;
    }
    return error;
}

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if ((LzjbError = add_error(m, "LzjbError")) == NULL
        || (ZleError = add_error(m, "ZleError")) == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
