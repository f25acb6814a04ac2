// codec.c — Python objects to and from the wire format (include/pyw_wire.h). GIL held throughout.
#include "pyw.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

void pyw_buf_printf(pyw_buf *b, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || pyw_buf_reserve(b, (size_t)n + 1) < 0) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

int pyw_buf_reserve(pyw_buf *b, size_t extra) {
	if (b->cap - b->len >= extra) {
		return 0;
	}
	size_t need = b->len + extra;
	if (need < b->len) {
		return -1; /* overflow */
	}
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need) {
		cap = cap * 2 > cap ? cap * 2 : need;
	}
	char *d = realloc(b->data, cap);
	if (d == NULL) {
		return -1;
	}
	b->data = d;
	b->cap = cap;
	return 0;
}

void pyw_buf_free(pyw_buf *b) {
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static int put(pyw_buf *b, const void *p, size_t n) {
	if (pyw_buf_reserve(b, n) < 0) {
		return -1;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static int put_tag(pyw_buf *b, char tag) { return put(b, &tag, 1); }

static int put_u64le(pyw_buf *b, uint64_t v) {
	unsigned char x[8];
	for (int i = 0; i < 8; i++) {
		x[i] = (unsigned char)(v >> (8 * i));
	}
	return put(b, x, 8);
}

static int put_uvarint(pyw_buf *b, uint64_t v) {
	unsigned char x[10];
	int n = 0;
	while (v >= 0x80) {
		x[n++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	x[n++] = (unsigned char)v;
	return put(b, x, (size_t)n);
}

static int put_blob(pyw_buf *b, char tag, const char *p, size_t n) {
	if (put_tag(b, tag) < 0 || put_uvarint(b, n) < 0) {
		return -1;
	}
	return put(b, p, n);
}

/* ---- encoding errors carry a path built on the way out: [3]["key"], as Go's side writes it */

/* Puts elem in front of the path, innermost first. A path that would not fit keeps its inner
 * end, which locates the value, and "..." in place of what is left out (as Go's side does). */
static void err_prepend(pyw_enc_err *e, const char *elem) {
	size_t el = strlen(elem), pl = strlen(e->path);
	if (strncmp(e->path, "...", 3) == 0) {
		return; /* cut already */
	}
	if (el + pl + 1 + 3 > sizeof e->path) { /* room for the mark is always kept */
		elem = "...";
		el = 3;
	}
	memmove(e->path + el, e->path, pl + 1);
	memcpy(e->path, elem, el);
}

/* The path element of dict key ks (kl bytes of valid UTF-8) into out (KEY_ELEM_MAX bytes):
 * ["key"], a key longer than 64 bytes cut on a character boundary, with "..." after it, then
 * quoted as Go's strconv.Quote quotes ASCII (its other characters as they are), as Go's side
 * writes a Go key. Built from the str's own text, never its repr: a str subclass's __repr__
 * would run code on an error's path. */
#define KEY_ELEM_MAX (64 * 4 + 8)
static void key_elem(char *out, const char *ks, Py_ssize_t kl) {
	Py_ssize_t n = kl;
	if (n > 64) {
		for (n = 64; n > 0 && ((unsigned char)ks[n] & 0xC0) == 0x80; n--) {
		}
	}
	static const char controls[] = "\a\b\f\n\r\t\v", letters[] = "abfnrtv";
	size_t o = 0;
	out[o++] = '[';
	out[o++] = '"';
	for (Py_ssize_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)ks[i];
		const char *named = ch != 0 ? strchr(controls, ch) : NULL;
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (named != NULL) {
			out[o++] = '\\';
			out[o++] = letters[named - controls];
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(out + o, 5, "\\x%02x", ch);
		} else {
			out[o++] = (char)ch; /* ASCII, or a byte of a UTF-8 character, kept whole by the cut */
		}
	}
	if (n < kl) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	memcpy(out + o, "\"]", 3);
}

static int fail(pyw_enc_err *e, const char *fmt, const char *arg) {
	snprintf(e->msg, sizeof e->msg, fmt, arg);
	return -1;
}

/* fail with the type's name as Python 3.13+ names it in messages: with its module
 * ('fractions.Fraction', '__main__.Point'), not for builtins ('set'). */
static int fail_type(pyw_enc_err *e, const char *fmt, PyTypeObject *t) {
	PyObject *n = PyType_GetFullyQualifiedName(t); /* reads the type's dict: runs no code */
	const char *s = n ? PyUnicode_AsUTF8(n) : NULL;
	if (s == NULL) {
		PyErr_Clear();
		s = t->tp_name;
	}
	int r = fail(e, fmt, s);
	Py_XDECREF(n);
	return r;
}

static int nomem(pyw_enc_err *e, const char *msg) {
	e->nomem = 1;
	return fail(e, "%s", msg);
}

static int fail_pyerr(pyw_enc_err *e, const char *what) {
	/* turn a pending Python exception into a message, and clear it */
	PyObject *exc = PyErr_GetRaisedException();
	e->nomem = exc != NULL && PyErr_GivenExceptionMatches(exc, PyExc_MemoryError);
	PyObject *s = exc ? PyObject_Str(exc) : NULL;
	const char *m = s ? PyUnicode_AsUTF8(s) : NULL;
	if (m == NULL) {
		PyErr_Clear();
	}
	snprintf(e->msg, sizeof e->msg, "%s: %s", what, m ? m : "(no detail)");
	Py_XDECREF(s);
	Py_XDECREF(exc);
	return -1;
}

typedef struct {
	pyw_buf *b;
	pyw_refs *refs;
	int share_large;
	pyw_enc_err *e;
} enc_ctx;

static int enc(enc_ctx *c, PyObject *o, int depth);

static int put_ref(enc_ctx *c, pyw_shared *s) {
	long idx = pyw_refs_add(c->refs, s);
	if (idx < 0 || put_tag(c->b, PYW_TAG_BUFFER) < 0 || put_uvarint(c->b, (uint64_t)idx) < 0) {
		return nomem(c->e, "out of memory");
	}
	return 0;
}

/* Buffers and memoryviews of them go by reference; large bytes too when asked. 1 done, 0 not
 * a shared value, -1 error. */
static int enc_shared(enc_ctx *c, PyObject *o) {
	pyw_shared *s = pyw_buffer_shared(o);
	if (s == NULL && PyMemoryView_Check(o)) {
		if (_PyMemoryView_CAST(o)->flags & _Py_MEMORYVIEW_RELEASED) {
			return fail(c->e, "a released memoryview cannot be sent%s", "");
		}
		Py_buffer *v = PyMemoryView_GET_BUFFER(o);
		pyw_shared *base = v->obj ? pyw_buffer_shared(v->obj) : NULL;
		if (base != NULL) {
			if (v->buf != base->data || (size_t)v->len != base->len || !PyBuffer_IsContiguous(v, 'C')) {
				return fail(c->e, "a memoryview of part of a pyworkers.Buffer cannot be shared%s",
				            " (send the whole buffer, or bytes(view))");
			}
			s = base;
		}
	}
	if (s != NULL) {
		if (c->refs == NULL) {
			return fail(c->e, "pyworkers.Buffer cannot be passed here%s", "");
		}
		return put_ref(c, s) < 0 ? -1 : 1;
	}
	if (c->share_large && c->refs != NULL && PyBytes_Check(o) && PyBytes_GET_SIZE(o) >= PYW_SHARE_MIN) {
		pyw_shared *n = pyw_shared_new((size_t)PyBytes_GET_SIZE(o));
		if (n == NULL) {
			return nomem(c->e, "out of memory for a shared copy of bytes");
		}
		memcpy(n->data, PyBytes_AS_STRING(o), n->len);
		int rc = put_ref(c, n);
		pyw_shared_decref(n); /* the table holds it now */
		return rc < 0 ? -1 : 1;
	}
	return 0;
}

static int enc_int(enc_ctx *c, PyObject *o) {
	pyw_buf *b = c->b;
	pyw_enc_err *e = c->e;
	int overflow = 0;
	long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
	if (v == -1 && PyErr_Occurred()) {
		return fail_pyerr(e, "int");
	}
	if (!overflow) {
		if (put_tag(b, PYW_TAG_INT) < 0) {
			return nomem(e, "out of memory");
		}
		return put_u64le(b, (uint64_t)v) < 0 ? nomem(e, "out of memory") : 0;
	}
	Py_ssize_t n = PyLong_AsNativeBytes(o, NULL, 0, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
	if (n < 0) {
		return fail_pyerr(e, "int");
	}
	if (put_tag(b, PYW_TAG_BIGINT) < 0 || put_uvarint(b, (uint64_t)n) < 0 || pyw_buf_reserve(b, (size_t)n) < 0) {
		return nomem(e, "out of memory encoding an int of many bytes");
	}
	Py_ssize_t got = PyLong_AsNativeBytes(o, b->data + b->len, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
	if (got < 0 || got > n) {
		return fail_pyerr(e, "int");
	}
	b->len += (size_t)n;
	return 0;
}

static int enc_seq(enc_ctx *c, char tag, PyObject *o, int depth) {
	pyw_buf *b = c->b;
	pyw_enc_err *e = c->e;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
	PyObject **items = PySequence_Fast_ITEMS(o);
	if (put_tag(b, tag) < 0 || put_uvarint(b, (uint64_t)n) < 0) {
		return nomem(e, "out of memory");
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		if (enc(c, items[i], depth + 1) < 0) {
			char elem[32];
			snprintf(elem, sizeof elem, "[%zd]", i);
			err_prepend(e, elem);
			return -1;
		}
	}
	return 0;
}

/* Whether dict o, whose keys are str but not all exact str, has two keys equal as str: keys of a
 * str subclass whose __eq__/__hash__ are not str's. A Go map would keep one of them. No code of
 * the subclass runs (the copies are exact str). */
static int dup_str_keys(PyObject *o, pyw_enc_err *e) {
	PyObject *seen = PySet_New(NULL);
	if (seen == NULL) {
		return fail_pyerr(e, "dict keys");
	}
	Py_ssize_t pos = 0;
	PyObject *k, *v;
	int rc = 0;
	while (rc == 0 && PyDict_Next(o, &pos, &k, &v)) {
		PyObject *s = PyUnicode_FromObject(k); /* an exact str of the same text */
		int has = s ? PySet_Contains(seen, s) : -1;
		if (has == 0) {
			has = PySet_Add(seen, s);
		} else if (has == 1) {
			const char *t = PyUnicode_AsUTF8(s); /* lone surrogates: no text to show */
			rc = t ? fail(e, "two dict keys equal as str ('%.80s'): a Go map would keep one", t) : fail_pyerr(e, "dict keys");
		}
		if (has < 0) {
			rc = fail_pyerr(e, "dict keys");
		}
		Py_XDECREF(s);
	}
	Py_DECREF(seen);
	return rc;
}

static int enc_dict(enc_ctx *c, PyObject *o, int depth) {
	pyw_buf *b = c->b;
	pyw_enc_err *e = c->e;
	Py_ssize_t pos = 0, n = PyDict_Size(o);
	PyObject *k, *v;
	int subclass_keys = 0;
	if (put_tag(b, PYW_TAG_DICT) < 0 || put_uvarint(b, (uint64_t)n) < 0) {
		return nomem(e, "out of memory");
	}
	while (PyDict_Next(o, &pos, &k, &v)) {
		if (!PyUnicode_Check(k)) {
			return fail_type(e, "dict key of type '%s' is not supported (keys must be str)", Py_TYPE(k));
		}
		subclass_keys |= !PyUnicode_CheckExact(k);
		Py_ssize_t kl;
		const char *ks = PyUnicode_AsUTF8AndSize(k, &kl);
		if (ks == NULL) {
			return fail_pyerr(e, "dict key");
		}
		if (put_blob(b, PYW_TAG_STR, ks, (size_t)kl) < 0) {
			return nomem(e, "out of memory");
		}
		Py_INCREF(k);
		Py_INCREF(v);
		int rc = enc(c, v, depth + 1);
		Py_DECREF(v);
		if (rc < 0) {
			char elem[KEY_ELEM_MAX];
			key_elem(elem, ks, kl);
			Py_DECREF(k);
			err_prepend(e, elem);
			return -1;
		}
		Py_DECREF(k);
	}
	if (PyDict_Size(o) != n) {
		return fail(e, "dict changed size while it was encoded%s", "");
	}
	return subclass_keys ? dup_str_keys(o, e) : 0;
}

/* Values encoded or decoded by this thread's current encoding or decoding, counted to poll
 * pyw_codec_stop now and then, once it has taken a while: one that ends soon is left to end,
 * and a batch's outcomes stay whole when an interrupt comes as it ends. */
static _Thread_local unsigned long codec_steps;
#define STOP_EVERY 4096           /* values between polls: tens of microseconds of work */
#define STOP_AFTER (64ul * 1024) /* values before the first poll: about a millisecond */

static _Thread_local int codec_stopped_here; /* stop_now said so during the current one */

static int stop_now(void) {
	if (++codec_steps % STOP_EVERY != 0 || codec_steps < STOP_AFTER || !pyw_codec_stop()) {
		return 0;
	}
	codec_stopped_here = 1;
	return 1;
}

/* The state of a conversion, saved by one that starts inside it (Python code a failing
 * encoding runs, PyObject_Repr of a dict key, may send on a channel) and restored after. */
typedef struct {
	unsigned long steps;
	int stopped;
} codec_state;

/* Between pyw_codec_carry(1) and (0), the count of values goes on from one conversion to the
 * next: a batch of items each too small for the first poll is stopped like one huge value. */
static _Thread_local int codec_carry;
static _Thread_local unsigned long codec_carried;

void pyw_codec_carry(int on) {
	codec_carry = on;
	codec_carried = 0;
}

static codec_state codec_start(void) {
	codec_state outer = {codec_steps, codec_stopped_here};
	codec_steps = codec_carry ? codec_carried : 0;
	codec_stopped_here = 0;
	return outer;
}

static void codec_end(codec_state outer) {
	if (codec_carry) {
		codec_carried = codec_steps;
	}
	codec_steps = outer.steps;
	codec_stopped_here = outer.stopped;
}

static int enc(enc_ctx *c, PyObject *o, int depth) {
	if (stop_now()) {
		c->e->stopped = 1;
		return fail(c->e, "interrupted: the task's context ended while its value was converted%s", "");
	}
	pyw_buf *b = c->b;
	pyw_enc_err *e = c->e;
	if (o == Py_None) {
		return put_tag(b, PYW_TAG_NONE) < 0 ? nomem(e, "out of memory") : 0;
	}
	if (PyBool_Check(o)) {
		return put_tag(b, o == Py_True ? PYW_TAG_TRUE : PYW_TAG_FALSE) < 0 ? nomem(e, "out of memory") : 0;
	}
	if (PyLong_Check(o)) {
		return enc_int(c, o);
	}
	if (PyFloat_Check(o)) {
		double d = PyFloat_AS_DOUBLE(o);
		uint64_t u;
		memcpy(&u, &d, 8);
		if (put_tag(b, PYW_TAG_FLOAT) < 0 || put_u64le(b, u) < 0) {
			return nomem(e, "out of memory");
		}
		return 0;
	}
	if (PyUnicode_Check(o)) {
		Py_ssize_t n;
		const char *s = PyUnicode_AsUTF8AndSize(o, &n);
		if (s == NULL) {
			return fail_pyerr(e, "str cannot be encoded as UTF-8");
		}
		return put_blob(b, PYW_TAG_STR, s, (size_t)n) < 0 ? nomem(e, "out of memory") : 0;
	}
	int sh = enc_shared(c, o);
	if (sh != 0) {
		return sh < 0 ? -1 : 0;
	}
	if (PyBytes_Check(o)) {
		return put_blob(b, PYW_TAG_BYTES, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o)) < 0
		           ? nomem(e, "out of memory")
		           : 0;
	}
	int is_tuple = PyTuple_Check(o), is_list = !is_tuple && PyList_Check(o), is_dict = PyDict_Check(o);
	if (is_tuple || is_list || is_dict) {
		if (depth >= PYW_MAX_DEPTH) {
			snprintf(e->msg, sizeof e->msg, "nested deeper than %d containers (does a container hold itself?)", PYW_MAX_DEPTH);
			return -1;
		}
		/* The depth limit assumes a thread's usual stack; CPython's check sees the real one (a
		 * thread made after threading.stack_size(256 << 10) has far less). */
		if (Py_EnterRecursiveCall(" while encoding a value")) {
			return fail_pyerr(e, "too deep for this thread's stack");
		}
		int rc;
		if (is_dict) {
			rc = enc_dict(c, o, depth);
		} else if (is_tuple) {
			rc = enc_seq(c, PYW_TAG_TUPLE, o, depth);
		} else {
			/* No Python code runs while we encode (no callbacks, no allocation of Python
			 * objects, the GIL is never released), so the list cannot change under us. */
			rc = enc_seq(c, PYW_TAG_LIST, o, depth);
		}
		Py_LeaveRecursiveCall();
		return rc;
	}
	return fail_type(e, "Python type '%s' is not supported (use None, bool, int, float, str, bytes, tuple, list "
	                    "or dict with str keys)",
	                 Py_TYPE(o));
}

/* Takes back what a failed encoding wrote: b back to len bytes, refs back to nrefs. */
static void unwind(pyw_buf *b, pyw_refs *refs, size_t len, size_t nrefs) {
	b->len = len;
	while (refs && refs->n > nrefs) {
		pyw_shared_decref(refs->v[--refs->n]);
	}
}

/* An encoding error that says nothing yet. */
static void err_clear(pyw_enc_err *err) {
	err->path[0] = 0;
	err->msg[0] = 0;
	err->nomem = 0;
	err->stopped = 0;
}

int pyw_encode(pyw_buf *b, pyw_refs *refs, int share_large, PyObject *o, pyw_enc_err *err) {
	codec_state outer = codec_start();
	err_clear(err);
	size_t start = b->len, nrefs = refs ? refs->n : 0;
	enc_ctx c = {b, refs, share_large, err};
	int rc = enc(&c, o, 0);
	if (rc < 0) {
		unwind(b, refs, start, nrefs);
	}
	codec_end(outer);
	return rc;
}

static int encode_outcomes(pyw_buf *b, pyw_refs *refs, PyObject *list, pyw_enc_err *err);

int pyw_encode_outcomes(pyw_buf *b, pyw_refs *refs, PyObject *list, pyw_enc_err *err) {
	codec_state outer = codec_start();
	int rc = encode_outcomes(b, refs, list, err);
	codec_end(outer);
	return rc;
}

static int encode_outcomes(pyw_buf *b, pyw_refs *refs, PyObject *list, pyw_enc_err *err) {
	err_clear(err);
	if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) % 2 != 0) {
		return fail(err, "call_many gave no flat list of outcomes%s", "");
	}
	Py_ssize_t n = PyList_GET_SIZE(list);
	size_t start = b->len, nrefs0 = refs ? refs->n : 0;
	enc_ctx c = {b, refs, 0, err};
	if (put_tag(b, PYW_TAG_LIST) < 0 || put_uvarint(b, (uint64_t)n) < 0) {
		unwind(b, refs, start, nrefs0);
		return nomem(err, "out of memory");
	}
	for (Py_ssize_t i = 0; i < n; i += 2) {
		/* no Python code runs while outcomes are encoded, a failed one's included (a dict key is
		 * named by its own text, not its repr), so the list stays as it is */
		PyObject *flag = Py_NewRef(PyList_GET_ITEM(list, i)), *v = Py_NewRef(PyList_GET_ITEM(list, i + 1));
		size_t at = b->len, nrefs = refs ? refs->n : 0;
		/* elements at depth 1, as inside the list: the decoders count depth the same way */
		int ok = enc(&c, flag, 1) == 0 && enc(&c, v, 1) == 0;
		Py_DECREF(flag);
		Py_DECREF(v);
		if (ok) {
			continue;
		}
		if (codec_stopped_here) { /* not this item's: the whole encoding stops for the interrupt */
			unwind(b, refs, start, nrefs0);
			return -1;
		}
		/* this outcome cannot cross: (None, (path, reason)) in its place, for that item alone */
		unwind(b, refs, at, nrefs);
		PyObject *why = Py_BuildValue("(NN)", PyUnicode_DecodeUTF8(err->path, (Py_ssize_t)strlen(err->path), "replace"),
		                              PyUnicode_DecodeUTF8(err->msg, (Py_ssize_t)strlen(err->msg), "replace"));
		if (why == NULL) {
			PyErr_Clear();
			unwind(b, refs, start, nrefs0);
			return nomem(err, "out of memory");
		}
		err_clear(err);
		int rc = enc(&c, Py_None, 1) == 0 && enc(&c, why, 1) == 0 ? 0 : -1;
		Py_DECREF(why);
		if (rc < 0) {
			unwind(b, refs, start, nrefs0);
			return -1;
		}
	}
	return 0;
}

/* ---- decoding */

static int get_uvarint(const char **p, const char *end, uint64_t *v) {
	uint64_t x = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end) {
			return -1;
		}
		unsigned char c = (unsigned char)*(*p)++;
		if (shift == 63 && c > 1) {
			return -1;
		}
		x |= (uint64_t)(c & 0x7f) << shift;
		if (c < 0x80) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

static PyObject *malformed(const char *what) {
	PyErr_Format(PyExc_ValueError, "pyworkers: malformed encoded value (%s)", what);
	return NULL;
}

static int get_len(const char **p, const char *end, size_t *n) {
	uint64_t v;
	if (get_uvarint(p, end, &v) < 0 || v > (uint64_t)(end - *p)) {
		return -1;
	}
	*n = (size_t)v;
	return 0;
}

typedef struct {
	pyw_shared *const *refs;
	size_t nrefs;
	/* Items of the sequences being decoded that have not begun: each takes at least a byte of
	 * what is left, so a sequence whose length leaves too few for them is malformed. Checked at
	 * each sequence, its length against the bytes left alone would let nested ones promise far
	 * more items than the input holds, each allocated before any is read. */
	size_t promised;
} dec_ctx;

static PyObject *dec_item(dec_ctx *c, const char **p, const char *end, int depth);

static PyObject *dec(dec_ctx *c, const char **p, const char *end, int depth) {
	if (stop_now()) {
		PyErr_SetString(PyExc_KeyboardInterrupt, "the task's context ended while its value was converted");
		return NULL;
	}
	if (*p >= end) {
		return malformed("truncated");
	}
	char tag = *(*p)++;
	size_t n;
	switch (tag) {
	case PYW_TAG_NONE:
		Py_RETURN_NONE;
	case PYW_TAG_TRUE:
		Py_RETURN_TRUE;
	case PYW_TAG_FALSE:
		Py_RETURN_FALSE;
	case PYW_TAG_INT:
	case PYW_TAG_FLOAT: {
		if (end - *p < 8) {
			return malformed("truncated number");
		}
		uint64_t u = 0;
		for (int i = 0; i < 8; i++) {
			u |= (uint64_t)(unsigned char)(*p)[i] << (8 * i);
		}
		*p += 8;
		if (tag == PYW_TAG_INT) {
			return PyLong_FromLongLong((long long)u);
		}
		double d;
		memcpy(&d, &u, 8);
		return PyFloat_FromDouble(d);
	}
	case PYW_TAG_BIGINT: {
		if (get_len(p, end, &n) < 0 || n == 0) {
			return malformed("bad int length");
		}
		PyObject *o = PyLong_FromNativeBytes(*p, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
		*p += n;
		return o;
	}
	case PYW_TAG_STR: {
		if (get_len(p, end, &n) < 0) {
			return malformed("bad str length");
		}
		PyObject *o = PyUnicode_DecodeUTF8(*p, (Py_ssize_t)n, "strict");
		*p += n;
		return o;
	}
	case PYW_TAG_BUFFER: {
		uint64_t idx;
		if (get_uvarint(p, end, &idx) < 0 || idx >= c->nrefs || c->refs[idx] == NULL) {
			return malformed("bad shared buffer reference");
		}
		PyObject *buf = pyw_buffer_wrap(c->refs[idx], 1);
		if (buf == NULL) {
			return NULL;
		}
		PyObject *mv = PyMemoryView_FromObject(buf);
		Py_DECREF(buf);
		return mv;
	}
	case PYW_TAG_BYTES: {
		if (get_len(p, end, &n) < 0) {
			return malformed("bad bytes length");
		}
		PyObject *o = PyBytes_FromStringAndSize(*p, (Py_ssize_t)n);
		*p += n;
		return o;
	}
	case PYW_TAG_TUPLE:
	case PYW_TAG_LIST: {
		if (depth >= PYW_MAX_DEPTH) {
			return malformed("nested too deep");
		}
		/* each item is at least one byte, and so is each promised before it (c->promised) */
		if (get_len(p, end, &n) < 0 || n + c->promised > (size_t)(end - *p)) { /* no overflow: both fit the input */
			return malformed("bad sequence length");
		}
		PyObject *o = tag == PYW_TAG_TUPLE ? PyTuple_New((Py_ssize_t)n) : PyList_New((Py_ssize_t)n);
		if (o == NULL) {
			return NULL;
		}
		c->promised += n;
		for (size_t i = 0; i < n; i++) {
			c->promised--;
			PyObject *it = dec_item(c, p, end, depth + 1);
			if (it == NULL) {
				Py_DECREF(o);
				return NULL;
			}
			if (tag == PYW_TAG_TUPLE) {
				PyTuple_SET_ITEM(o, (Py_ssize_t)i, it);
			} else {
				PyList_SET_ITEM(o, (Py_ssize_t)i, it);
			}
		}
		return o;
	}
	case PYW_TAG_DICT: {
		if (depth >= PYW_MAX_DEPTH) {
			return malformed("nested too deep");
		}
		if (get_len(p, end, &n) < 0) {
			return malformed("bad dict length");
		}
		PyObject *o = PyDict_New();
		if (o == NULL) {
			return NULL;
		}
		for (size_t i = 0; i < n; i++) {
			if (*p >= end || **p != PYW_TAG_STR) {
				Py_DECREF(o);
				return malformed("dict key is not a str");
			}
			PyObject *k = dec(c, p, end, depth + 1); /* a str */
			PyObject *v = k ? dec_item(c, p, end, depth + 1) : NULL;
			if (v == NULL || PyDict_SetItem(o, k, v) < 0) {
				Py_XDECREF(k);
				Py_XDECREF(v);
				Py_DECREF(o);
				return NULL;
			}
			Py_DECREF(k);
			Py_DECREF(v);
		}
		return o;
	}
	}
	return malformed("unknown tag");
}

/* dec of a container's item; a container in turn under CPython's check of the real stack (see
 * enc): RecursionError before the stack overflows. */
static PyObject *dec_item(dec_ctx *c, const char **p, const char *end, int depth) {
	if (*p >= end || (**p != PYW_TAG_TUPLE && **p != PYW_TAG_LIST && **p != PYW_TAG_DICT)) {
		return dec(c, p, end, depth);
	}
	if (Py_EnterRecursiveCall(" while decoding a value")) {
		return NULL;
	}
	PyObject *o = dec(c, p, end, depth);
	Py_LeaveRecursiveCall();
	return o;
}

PyObject *pyw_decode(const char **p, const char *end, pyw_shared *const *refs, size_t nrefs) {
	codec_state outer = codec_start();
	dec_ctx c = {refs, nrefs, 0};
	PyObject *o = dec(&c, p, end, 0);
	codec_end(outer);
	return o;
}

/* ---- shared buffers */

pyw_shared *pyw_shared_new(size_t len) {
	/* header and data in one block; data aligned for any use (SIMD, struct views) */
	size_t head = (sizeof(pyw_shared) + 63) & ~(size_t)63;
	if (len > SIZE_MAX - head) {
		return NULL;
	}
	char *mem = NULL;
	if (posix_memalign((void **)&mem, 64, head + len) != 0) {
		return NULL;
	}
	memset(mem + head, 0, len);
	pyw_shared *s = (pyw_shared *)mem;
	atomic_init(&s->refs, 1);
	s->len = len;
	s->data = mem + head;
	return s;
}

void pyw_shared_incref(pyw_shared *s) { atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed); }

void pyw_shared_decref(pyw_shared *s) {
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
		free(s);
	}
}

long pyw_refs_add(pyw_refs *r, pyw_shared *s) {
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 4;
		pyw_shared **v = realloc(r->v, cap * sizeof *v);
		if (v == NULL) {
			return -1;
		}
		r->v = v;
		r->cap = cap;
	}
	pyw_shared_incref(s);
	r->v[r->n] = s;
	return (long)r->n++;
}

void pyw_refs_clear(pyw_refs *r) {
	while (r->n > 0) {
		pyw_shared_decref(r->v[--r->n]);
	}
}

void pyw_refs_free(pyw_refs *r) {
	pyw_refs_clear(r);
	free(r->v);
	r->v = NULL;
	r->cap = 0;
}
