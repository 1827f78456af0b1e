/*
 * ext4's directory-index hashes (legacy, half-MD4, TEA; signed and unsigned chars) in C.
 *
 * Why C: a lookup in an indexed directory hashes one name, but listing it as the kernel
 * does (in hash order, leaving out names a damaged index misfiles) hashes every name, and
 * CPython ran half-MD4 at ~20 us and TEA at ~24 us a name: three seconds for a directory
 * of 100,000 names. Here a name costs well under a microsecond.
 *
 * The Python side (htree.py) checks the version, picks the flavour and applies the
 * kernel's fix-ups to the result (the low bit cleared, the end-of-directory value moved);
 * this file only computes the two 32-bit words a flavour yields.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { LEGACY = 0, HALF_MD4 = 1, TEA = 2 };

static uint32_t rol32(uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }

/* A name's byte as the hash reads it: ext4 treated `char` as signed unless the
 * filesystem says the hash is unsigned, and the difference shows for bytes >= 128. */
static int32_t name_char(const unsigned char *name, Py_ssize_t i, int is_signed)
{
    return is_signed ? (int32_t)(signed char)name[i] : (int32_t)name[i];
}

/* The legacy ("dx_hack") hash: one 32-bit word, no seed. */
static uint32_t legacy_hash(const unsigned char *name, Py_ssize_t len, int is_signed)
{
    uint32_t hash0 = 0x12A3FE2D, hash1 = 0x37ABE8F9;
    for (Py_ssize_t i = 0; i < len; i++) {
        uint32_t value = hash1 + (hash0 ^ (uint32_t)(name_char(name, i, is_signed) * 7152373));
        if (value & 0x80000000u)
            value -= 0x7FFFFFFF;
        hash1 = hash0;
        hash0 = value;
    }
    return hash0 << 1;
}

/* `num` words from the name's next `len` bytes (at most num * 4 used), four bytes to a
 * word, the last words padded with the remaining length repeated in every byte. */
static void hash_words(const unsigned char *name, Py_ssize_t len, int is_signed,
                       uint32_t *out, int num)
{
    uint32_t pad = (uint32_t)len | ((uint32_t)len << 8);
    pad |= pad << 16;
    uint32_t value = pad;
    Py_ssize_t used = len < num * 4 ? len : num * 4;
    int filled = 0;
    for (Py_ssize_t i = 0; i < used; i++) {
        value = (uint32_t)name_char(name, i, is_signed) + (value << 8);
        if (i % 4 == 3) {
            out[filled++] = value;
            value = pad;
        }
    }
    if (filled < num)
        out[filled++] = value;
    while (filled < num)
        out[filled++] = pad;
}

/* Three rounds of MD4 over 8 words, added into buf: each step is
 * a = rol(a + f(b, c, d) + word + k, shift), the roles of a..d rotating one place a step. */
static void half_md4(uint32_t buf[4], const uint32_t in[8])
{
    static const int order[3][8] = {
        {0, 1, 2, 3, 4, 5, 6, 7}, {1, 3, 5, 7, 0, 2, 4, 6}, {3, 7, 2, 6, 1, 5, 0, 4}};
    static const int shifts[3][4] = {{3, 7, 11, 19}, {3, 5, 9, 13}, {3, 9, 11, 15}};
    static const uint32_t keys[3] = {0, 013240474631u, 015666365641u};
    uint32_t r[4] = {buf[0], buf[1], buf[2], buf[3]}; /* a, b, c, d */
    for (int round = 0; round < 3; round++) {
        for (int step = 0; step < 8; step++) {
            /* The register updated, then the three arguments in order: a(b,c,d),
             * d(a,b,c), c(d,a,b), b(c,d,a). */
            int t = (4 - step % 4) % 4;
            uint32_t x = r[(t + 1) % 4], y = r[(t + 2) % 4], z = r[(t + 3) % 4];
            uint32_t f;
            if (round == 0)
                f = z ^ (x & (y ^ z));
            else if (round == 1)
                f = (x & y) + ((x ^ y) & z);
            else
                f = x ^ y ^ z;
            r[t] = rol32(r[t] + f + in[order[round][step]] + keys[round], shifts[round][step % 4]);
        }
    }
    for (int i = 0; i < 4; i++)
        buf[i] += r[i];
}

/* 16 rounds of TEA over 4 words, added into buf[0..1]. */
static void tea(uint32_t buf[4], const uint32_t in[4])
{
    uint32_t b0 = buf[0], b1 = buf[1], total = 0;
    for (int n = 0; n < 16; n++) {
        total += 0x9E3779B9u;
        b0 += ((b1 << 4) + in[0]) ^ (b1 + total) ^ ((b1 >> 5) + in[1]);
        b1 += ((b0 << 4) + in[2]) ^ (b0 + total) ^ ((b0 >> 5) + in[3]);
    }
    buf[0] += b0;
    buf[1] += b1;
}

static PyObject *py_dx_hash(PyObject *self, PyObject *args)
{
    Py_buffer name;
    int flavour, is_signed;
    unsigned int s0, s1, s2, s3;
    if (!PyArg_ParseTuple(args, "y*ipIIII", &name, &flavour, &is_signed, &s0, &s1, &s2, &s3))
        return NULL;
    const unsigned char *p = name.buf;
    Py_ssize_t len = name.len;
    uint32_t major, minor;
    if (flavour == LEGACY) {
        major = legacy_hash(p, len, is_signed);
        minor = 0;
    } else if (flavour == HALF_MD4 || flavour == TEA) {
        uint32_t buf[4] = {s0, s1, s2, s3};
        if (!(s0 | s1 | s2 | s3)) { /* no seed: MD4's initial values */
            buf[0] = 0x67452301u; buf[1] = 0xEFCDAB89u; buf[2] = 0x98BADCFEu; buf[3] = 0x10325476u;
        }
        int step = flavour == HALF_MD4 ? 32 : 16;
        uint32_t in[8];
        for (Py_ssize_t at = 0; at < len; at += step) {
            hash_words(p + at, len - at, is_signed, in, step / 4);
            if (flavour == HALF_MD4)
                half_md4(buf, in);
            else
                tea(buf, in);
        }
        major = flavour == HALF_MD4 ? buf[1] : buf[0];
        minor = flavour == HALF_MD4 ? buf[2] : buf[1];
    } else {
        PyBuffer_Release(&name);
        PyErr_Format(PyExc_ValueError, "unknown hash flavour %d", flavour);
        return NULL;
    }
    PyBuffer_Release(&name);
    return Py_BuildValue("(II)", major, minor);
}

static PyMethodDef methods[] = {
    {"dx_hash", py_dx_hash, METH_VARARGS,
     "dx_hash(name, flavour, signed, s0, s1, s2, s3) -> (major, minor): the raw words of "
     "hash flavour 0 (legacy), 1 (half-MD4) or 2 (TEA) with seed s0..s3."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
