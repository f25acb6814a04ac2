// pychan.c — pyworkers.Channel, the Python face of a queue, and its exceptions. Added to the
// pyworkers built-in module of every interpreter through pyw_module_add_ext.
#include "pyw_queue.h"

#include <math.h>

typedef struct {
	PyObject_HEAD pyw_queue *q;
} ChannelObject;

/* The module's exception of that name (new reference), for raising. */
static PyObject *module_exc(PyObject *self, const char *name) {
	PyObject *m = PyType_GetModule(Py_TYPE(self)); /* borrowed */
	return m ? PyObject_GetAttrString(m, name) : NULL;
}

/* The interpreter of the pyworkers module the channel's type belongs to (see pyw_wait_prepare). */
static pyw_interp *interp_of(PyObject *self) { return pyw_module_interp(PyType_GetModule(Py_TYPE(self))); }

static PyObject *raise_exc(PyObject *self, const char *name, const char *msg) {
	PyObject *e = module_exc(self, name);
	if (e != NULL) {
		PyErr_SetString(e, msg);
		Py_DECREF(e);
	}
	return NULL;
}

static PyObject *wrap(PyTypeObject *type, pyw_queue *q) {
	ChannelObject *self = (ChannelObject *)type->tp_alloc(type, 0);
	if (self == NULL) {
		pyw_queue_decref(q);
		return NULL;
	}
	self->q = q;
	return (PyObject *)self;
}

static PyObject *chan_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
	static char *kwlist[] = {"id", NULL};
	long long id;
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "L:Channel", kwlist, &id)) {
		return NULL;
	}
	pyw_queue *q = pyw_queue_lookup(id);
	if (q == NULL) {
		return PyErr_Format(PyExc_ValueError, "no pyworkers channel has id %lld (it was never made, or every "
		                                      "holder has let it go)", id);
	}
	return wrap(type, q);
}

static PyObject *chan_create(PyObject *cls, PyObject *args, PyObject *kwds) {
	static char *kwlist[] = {"capacity", NULL};
	Py_ssize_t cap = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n:create", kwlist, &cap)) {
		return NULL;
	}
	if (cap < 0) {
		PyErr_SetString(PyExc_ValueError, "capacity must be 0 (unbounded) or positive");
		return NULL;
	}
	pyw_queue *q = pyw_queue_new((size_t)cap);
	if (q == NULL) {
		return PyErr_NoMemory();
	}
	return wrap((PyTypeObject *)cls, q);
}

static void chan_dealloc(PyObject *o) {
	PyTypeObject *tp = Py_TYPE(o);
	pyw_queue *q = ((ChannelObject *)o)->q;
	if (q != NULL) {
		pyw_queue_decref(q);
	}
	tp->tp_free(o);
	Py_DECREF(tp);
}

/* timeout: None → wait as long as needed (PYW_Q_FOREVER); a number of seconds ≥ 0 → nanoseconds. */
static int parse_timeout(PyObject *t, int64_t *ns) {
	if (t == NULL || t == Py_None) {
		*ns = PYW_Q_FOREVER;
		return 0;
	}
	double s = PyFloat_AsDouble(t);
	if (s == -1.0 && PyErr_Occurred()) {
		return -1;
	}
	if (isnan(s) || s < 0) {
		PyErr_SetString(PyExc_ValueError, "timeout must be None or a number of seconds >= 0");
		return -1;
	}
	*ns = s > 9e9 ? PYW_Q_FOREVER : (int64_t)(s * 1e9);
	if (*ns == 0 && s > 0) {
		*ns = 1; /* a wait, however short: it ends in TimeoutError, not as a timeout of 0 would */
	}
	return 0;
}

/* Maps a queue outcome to a Python exception (GIL held). */
static PyObject *outcome(PyObject *self, int rc, int sending) {
	switch (rc) {
	case PYW_Q_CLOSED:
		return raise_exc(self, "ChannelClosed", sending ? "send on a closed channel" : "channel closed and drained");
	case PYW_Q_FULL:
		return raise_exc(self, "ChannelFull", "channel is full");
	case PYW_Q_EMPTY:
		return raise_exc(self, "ChannelEmpty", "channel is empty");
	case PYW_Q_TIMEOUT:
		PyErr_SetString(PyExc_TimeoutError, sending ? "send timed out" : "recv timed out");
		return NULL;
	case PYW_Q_INTERRUPTED:
		return pyw_raise_interrupt();
	case PYW_Q_NOMEM:
		return PyErr_NoMemory();
	}
	PyErr_Format(PyExc_SystemError, "pyworkers: unexpected queue outcome %d", rc);
	return NULL;
}

/* Encoding scratch space of this thread, reused from one send to the next (scratch_get), and
 * freed when the thread ends: Python code may start threads that send and end, many of them. */
static _Thread_local pyw_buf scratch;
static _Thread_local int scratch_owned; /* scratch_key frees it when this thread ends */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_made;

static void scratch_free(void *b) { pyw_buf_free((pyw_buf *)b); }

static void scratch_key_make(void) { scratch_key_made = pthread_key_create(&scratch_key, scratch_free) == 0; }

/* This thread's scratch space, emptied. */
static pyw_buf *scratch_get(void) {
	if (!scratch_owned) {
		pthread_once(&scratch_once, scratch_key_make);
		scratch_owned = scratch_key_made && pthread_setspecific(scratch_key, &scratch) == 0;
	}
	scratch.len = 0;
	return &scratch;
}

/* After each use: a huge item's space is not kept for good. */
static void scratch_trim(void) {
	if (scratch.cap > (1u << 20)) {
		pyw_buf_free(&scratch);
	}
}

/* pyw_encode of obj into scratch (its result; on failure refs as they were), which the task's
 * interrupt stops for a huge value: then *raised is 1, with the interrupt raised
 * (pyw_stoppable_end), and refs freed; a stop that raised nothing converts again. */
static int encode_stoppable(PyObject *obj, pyw_refs *refs, pyw_enc_err *e, int *raised) {
	int erc, stop;
	do {
		pyw_stoppable st = pyw_stoppable_begin();
		erc = pyw_encode(scratch_get(), refs, 1, obj, e);
		stop = pyw_stoppable_end(st, erc < 0 && e->stopped);
	} while (stop == PYW_STOP_AGAIN);
	*raised = stop == PYW_STOP_RAISED;
	if (*raised) {
		pyw_refs_free(refs); /* the table the stopped conversion grew */
	}
	return erc;
}

/* For a receive, before it takes an item: whether the task is being interrupted, or is about to
 * be (an interrupter waiting for the GIL comes in first: pyw_admit_interrupter). A busy
 * receiver, which keeps the GIL, let it in at the eval loop's check just after the call had
 * returned its item, and the item was lost with the frame (1 in 5 interrupts of
 * `out.send(ch.recv())` in a loop). Sends do not: code that passes on what it received would
 * lose the item there instead; an interrupt after a send has sent its item loses nothing. */
static int interrupted_now(PyObject *self) {
	pyw_admit_interrupter();
	return pyw_interrupt_pending(interp_of(self));
}

static PyObject *do_send(PyObject *self, PyObject *obj, int64_t timeout_ns) {
	if (pyw_interrupt_pending(interp_of(self))) { /* the task is being interrupted: send nothing */
		return pyw_raise_interrupt();
	}
	if (timeout_ns == 0 && pyw_queue_full_now(((ChannelObject *)self)->q)) {
		return outcome(self, PYW_Q_FULL, 1); /* before the value is converted, for nothing */
	}
	pyw_refs refs = {0};
	pyw_enc_err e;
	int raised;
	int erc = encode_stoppable(obj, &refs, &e, &raised);
	if (raised) {
		scratch_trim();
		return NULL;
	}
	if (erc < 0) {
		pyw_refs_free(&refs);
		scratch_trim();
		PyObject *type = e.nomem ? PyExc_MemoryError : PyExc_TypeError;
		if (e.path[0]) {
			return PyErr_Format(type, "cannot send this value: at %s: %s", e.path, e.msg);
		}
		return PyErr_Format(type, "cannot send this value: %s", e.msg);
	}
	pyw_queue *q = ((ChannelObject *)self)->q;
	/* First without waiting, GIL held (the mutex is held only briefly); release the GIL only
	 * to wait. The item holds its own references to shared buffers; a large one is built once
	 * for both attempts (keep). */
	pyw_item *keep = NULL;
	int rc = pyw_queue_send(q, scratch.data, scratch.len, refs.v, refs.n, &keep, 0, NULL);
	if (rc == PYW_Q_FULL && timeout_ns != 0) {
		PYW_BEGIN_WAIT(interp_of(self))
		rc = pyw_queue_send(q, scratch.data, scratch.len, refs.v, refs.n, &keep, timeout_ns, NULL);
		Py_END_ALLOW_THREADS
	}
	pyw_item_free(keep);
	pyw_refs_free(&refs);
	scratch_trim();
	if (rc != PYW_Q_OK) {
		return outcome(self, rc, 1);
	}
	Py_RETURN_NONE;
}

/* The item a receive took goes back to the queue's head when the task was interrupted as it
 * took it (an interrupt that came with the item, while the thread waited): the interrupt is
 * raised now and the item stays for the next receiver. 1 if it went back. Not airtight: an
 * interrupter that came after this check and got the GIL at the eval loop's check as the call
 * returned would lose the item with the frame, as KeyboardInterrupt can in any Python code;
 * but one waits for the GIL for a switch interval before it asks for it, and a receiver that
 * keeps the GIL lets it in at its next receive (interrupted_now). */
static int give_back_if_interrupted(PyObject *self, pyw_queue *q, const char *small, size_t len, pyw_item *chain) {
	if (!interrupted_now(self)) {
		return 0;
	}
	if (chain != NULL) {
		pyw_queue_unget(q, chain);
		return 1;
	}
	return pyw_queue_unget_small(q, small, len) == PYW_Q_OK; /* else: no memory, return the item */
}

/* Whether the decoding that just failed found no valid encoding (ValueError): an item only a
 * bug could make, which would fail every receiver after it as well. It is dropped, with its
 * error; the Go side does the same. */
static int malformed_item(void) { return PyErr_ExceptionMatches(PyExc_ValueError); }

/* Whether a decoding failed because the task's interrupt stopped it (pyw_codec_stop): it runs no
 * Python code, so its KeyboardInterrupt can come from nowhere else. */
static int decode_stopped(PyObject *v) { return v == NULL && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt); }

/* The one value an item holds (its data, len bytes, and its shared buffers), decoded; bytes
 * left after it make it malformed, as Go's decoder finds it (ValueError). */
static PyObject *decode_item(const char *data, size_t len, pyw_shared *const *refs, size_t nrefs) {
	const char *p = data;
	PyObject *v = pyw_decode(&p, data + len, refs, nrefs);
	if (v != NULL && p != data + len) {
		Py_DECREF(v);
		PyErr_Format(PyExc_ValueError, "pyworkers: malformed encoded value (%zu bytes after it)", (size_t)(data + len - p));
		return NULL;
	}
	return v;
}

static PyObject *do_recv(PyObject *self, int64_t timeout_ns) {
	if (interrupted_now(self)) { /* the task is being interrupted: take nothing */
		return pyw_raise_interrupt();
	}
	pyw_queue *q = ((ChannelObject *)self)->q;
	char small[PYW_SMALL_ITEM];
	size_t len;
	pyw_item *it = NULL;
	int rc = pyw_queue_recv_copy(q, small, &len, &it, 0, NULL);
	if (rc == PYW_Q_EMPTY && timeout_ns != 0) {
		PYW_BEGIN_WAIT(interp_of(self))
		rc = pyw_queue_recv_copy(q, small, &len, &it, timeout_ns, NULL);
		Py_END_ALLOW_THREADS
		if (rc == PYW_Q_OK && give_back_if_interrupted(self, q, small, len, it)) {
			return pyw_raise_interrupt();
		}
	}
	if (rc != PYW_Q_OK) {
		return outcome(self, rc, 0);
	}
	PyObject *v;
	int stop;
	do { /* a huge value: the task's interrupt stops it (pyw_stoppable_end) */
		pyw_stoppable st = pyw_stoppable_begin();
		v = it != NULL ? decode_item(it->data, it->len, it->refs.v, it->refs.n) : decode_item(small, len, NULL, 0);
		stop = pyw_stoppable_end(st, decode_stopped(v));
	} while (stop == PYW_STOP_AGAIN);
	if (v != NULL || (stop == PYW_STOP_NONE && malformed_item())) {
		pyw_item_free(it);
		return v;
	}
	/* An item that cannot be decoded now (no memory, the task's interrupt stopped the decoder)
	 * goes back to the queue's head for the next receiver: nothing taken is lost. */
	if (it != NULL) {
		pyw_queue_unget(q, it);
	} else if (pyw_queue_unget_small(q, small, len) != PYW_Q_OK) {
		/* decoding a small item fails only for want of memory, and there was none to put it back
		 * either: say so rather than lose it silently */
		PyErr_SetString(PyExc_MemoryError, "out of memory: a received item could neither be decoded nor put back");
	}
	return NULL;
}

/* Arguments (positional or keyword) of send(obj, timeout=None) / recv(timeout=None), parsed
 * by hand: these are the hot calls. */
static int fast_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int nreq,
                     PyObject **out /* [obj,] timeout */) {
	int nmax = nreq + 1;
	if (nargs > nmax) {
		PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fn, nmax, nargs);
		return -1;
	}
	for (Py_ssize_t i = 0; i < nargs; i++) {
		out[i] = args[i];
	}
	Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	for (Py_ssize_t k = 0; k < nkw; k++) {
		PyObject *name = PyTuple_GET_ITEM(kwnames, k);
		int slot = -1;
		if (PyUnicode_EqualToUTF8(name, "timeout")) {
			slot = nreq;
		} else if (nreq == 1 && PyUnicode_EqualToUTF8(name, "obj")) {
			slot = 0;
		}
		if (slot < 0 || out[slot] != NULL) {
			PyErr_Format(PyExc_TypeError, "%s() got an unexpected or repeated keyword argument %R", fn, name);
			return -1;
		}
		out[slot] = args[nargs + k];
	}
	if (nreq == 1 && out[0] == NULL) {
		PyErr_Format(PyExc_TypeError, "%s() missing required argument 'obj'", fn);
		return -1;
	}
	return 0;
}

static PyObject *chan_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
	PyObject *a[2] = {NULL, NULL};
	int64_t ns;
	if (fast_args("send", args, nargs, kwnames, 1, a) < 0 || parse_timeout(a[1], &ns) < 0) {
		return NULL;
	}
	return do_send(self, a[0], ns);
}

static PyObject *chan_send_nowait(PyObject *self, PyObject *obj) { return do_send(self, obj, 0); }

static PyObject *chan_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
	PyObject *a[1] = {NULL};
	int64_t ns;
	if (fast_args("recv", args, nargs, kwnames, 0, a) < 0 || parse_timeout(a[0], &ns) < 0) {
		return NULL;
	}
	return do_recv(self, ns);
}

static PyObject *chan_recv_nowait(PyObject *self, PyObject *unused) {
	(void)unused;
	return do_recv(self, 0);
}

/* The exception being raised gets attribute sent: how many items send_many sent before it (a
 * retry must not send them again). Returns NULL. */
static PyObject *with_sent(size_t sent) {
	PyObject *exc = PyErr_GetRaisedException();
	PyObject *n = PyLong_FromSize_t(sent);
	if (n == NULL || PyObject_SetAttrString(exc, "sent", n) < 0) {
		PyErr_Clear(); /* no memory for the count: the exception itself still goes */
	}
	Py_XDECREF(n);
	PyErr_SetRaisedException(exc);
	return NULL;
}

/* send_many(items, timeout=None): encode every item first (a TypeError sends nothing), then
 * append them in order, under one lock acquisition while there is room. */
static PyObject *chan_send_many(PyObject *self, PyObject *args, PyObject *kwds) {
	static char *kwlist[] = {"items", "timeout", NULL};
	PyObject *iterable, *timeout = NULL;
	int64_t ns;
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:send_many", kwlist, &iterable, &timeout) ||
	    parse_timeout(timeout, &ns) < 0) {
		return NULL;
	}
	if (pyw_interrupt_pending(interp_of(self))) {
		pyw_raise_interrupt();
		return with_sent(0);
	}
	/* a tuple, not a list's own array: a stopped conversion releases the GIL (encode_stoppable),
	 * and another thread may change the list meanwhile */
	PyObject *seq = PySequence_Tuple(iterable);
	if (seq == NULL) {
		return NULL;
	}
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	PyObject **objs = PySequence_Fast_ITEMS(seq);
	pyw_item *chain = NULL, **tail = &chain;
	int stopped = 0;
	pyw_codec_carry(1); /* many items, each small: stoppable all the same */
	for (Py_ssize_t i = 0; i < n; i++) {
		pyw_refs refs = {0};
		pyw_enc_err e;
		int erc = encode_stoppable(objs[i], &refs, &e, &stopped);
		if (stopped) {
			goto fail;
		}
		if (erc < 0) {
			pyw_refs_free(&refs);
			PyErr_Format(e.nomem ? PyExc_MemoryError : PyExc_TypeError, "cannot send item %zd: %s%s%s", i, e.path, e.path[0] ? ": " : "", e.msg);
			goto fail;
		}
		pyw_item *it = pyw_item_new(scratch.data, scratch.len, refs.v, refs.n);
		pyw_refs_free(&refs);
		if (it == NULL) {
			PyErr_NoMemory();
			goto fail;
		}
		*tail = it;
		tail = &it->next;
	}
	pyw_codec_carry(0);
	Py_DECREF(seq);
	scratch_trim();
	pyw_queue *q = ((ChannelObject *)self)->q;
	size_t pushed;
	int rc = pyw_queue_push_many(q, &chain, &pushed, 0, NULL);
	if (rc == PYW_Q_FULL && ns != 0) {
		size_t more;
		PYW_BEGIN_WAIT(interp_of(self))
		rc = pyw_queue_push_many(q, &chain, &more, ns, NULL);
		Py_END_ALLOW_THREADS
		pushed += more;
	}
	pyw_item_free_chain(chain); /* what was not sent */
	if (rc != PYW_Q_OK) {
		outcome(self, rc, 1);
		return with_sent(pushed);
	}
	return PyLong_FromSize_t(pushed);

fail:
	pyw_codec_carry(0);
	pyw_item_free_chain(chain);
	Py_DECREF(seq);
	scratch_trim();
	return stopped ? with_sent(0) : NULL; /* the interrupt says how many went, as a wait's does */
}

/* recv_many(max=64, timeout=None): wait for one item like recv, return it with up to max-1
 * more that are already there, as a list. */
static PyObject *chan_recv_many(PyObject *self, PyObject *args, PyObject *kwds) {
	static char *kwlist[] = {"max", "timeout", NULL};
	Py_ssize_t max = 64;
	PyObject *timeout = NULL;
	int64_t ns;
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nO:recv_many", kwlist, &max, &timeout) ||
	    parse_timeout(timeout, &ns) < 0) {
		return NULL;
	}
	if (max < 1) {
		PyErr_SetString(PyExc_ValueError, "max must be at least 1");
		return NULL;
	}
	if (interrupted_now(self)) {
		return pyw_raise_interrupt();
	}
	pyw_queue *q = ((ChannelObject *)self)->q;
	pyw_item *chain = NULL;
	size_t n = 0;
	int rc = pyw_queue_pop_many(q, &chain, (size_t)max, &n, 0, NULL);
	if (rc == PYW_Q_EMPTY && ns != 0) {
		PYW_BEGIN_WAIT(interp_of(self))
		rc = pyw_queue_pop_many(q, &chain, (size_t)max, &n, ns, NULL);
		Py_END_ALLOW_THREADS
		if (rc == PYW_Q_OK && give_back_if_interrupted(self, q, NULL, 0, chain)) {
			return pyw_raise_interrupt();
		}
	}
	if (rc != PYW_Q_OK) {
		return outcome(self, rc, 0);
	}
	PyObject *list;
	pyw_item **bad; /* the link to the item that failed to decode */
	int stop;
	do { /* huge values, or many: the task's interrupt stops them (pyw_stoppable_end) */
		pyw_stoppable st = pyw_stoppable_begin();
		pyw_codec_carry(1);
		list = PyList_New((Py_ssize_t)n);
		bad = NULL;
		Py_ssize_t i = 0;
		for (pyw_item **at = &chain; *at != NULL && list != NULL; at = &(*at)->next, i++) {
			PyObject *v = decode_item((*at)->data, (*at)->len, (*at)->refs.v, (*at)->refs.n);
			if (v == NULL) {
				Py_CLEAR(list);
				bad = at;
			} else {
				PyList_SET_ITEM(list, i, v);
			}
		}
		pyw_codec_carry(0);
		stop = pyw_stoppable_end(st, decode_stopped(list));
	} while (stop == PYW_STOP_AGAIN);
	if (list != NULL) {
		pyw_item_free_chain(chain);
		return list;
	}
	if (stop == PYW_STOP_NONE && bad != NULL && malformed_item()) { /* that one is dropped (see do_recv) */
		pyw_item *it = *bad;
		*bad = it->next;
		it->next = NULL;
		pyw_item_free(it);
	}
	pyw_queue_unget(q, chain); /* the others, in order, for the next receiver (see do_recv) */
	return NULL;
}

static PyObject *chan_close(PyObject *self, PyObject *unused) {
	(void)unused;
	return PyBool_FromLong(pyw_queue_close(((ChannelObject *)self)->q));
}

static PyObject *chan_iternext(PyObject *self) {
	PyObject *v = do_recv(self, -1);
	if (v != NULL) {
		return v;
	}
	/* ChannelClosed ends the loop (NULL without an exception means StopIteration); anything
	 * else propagates. Look the class up with no exception pending. */
	PyObject *exc = PyErr_GetRaisedException();
	PyObject *closed = module_exc(self, "ChannelClosed");
	if (closed == NULL) {
		Py_XDECREF(exc);
		return NULL;
	}
	if (!PyObject_TypeCheck(exc, (PyTypeObject *)closed)) {
		PyErr_SetRaisedException(exc);
		exc = NULL;
	}
	Py_DECREF(closed);
	Py_XDECREF(exc);
	return NULL;
}

static Py_ssize_t chan_len(PyObject *self) { return (Py_ssize_t)pyw_queue_len(((ChannelObject *)self)->q); }

static PyObject *chan_repr(PyObject *self) {
	pyw_queue *q = ((ChannelObject *)self)->q;
	return PyUnicode_FromFormat("<pyworkers.Channel id=%lld len=%zu capacity=%zu%s>", (long long)pyw_queue_id(q),
	                            pyw_queue_len(q), pyw_queue_capacity(q), pyw_queue_is_closed(q) ? " closed" : "");
}

static PyObject *chan_get_id(PyObject *self, void *c) {
	(void)c;
	return PyLong_FromLongLong(pyw_queue_id(((ChannelObject *)self)->q));
}

static PyObject *chan_get_capacity(PyObject *self, void *c) {
	(void)c;
	return PyLong_FromSize_t(pyw_queue_capacity(((ChannelObject *)self)->q));
}

static PyObject *chan_get_closed(PyObject *self, void *c) {
	(void)c;
	return PyBool_FromLong(pyw_queue_is_closed(((ChannelObject *)self)->q));
}

static PyObject *chan_richcompare(PyObject *a, PyObject *b, int op) {
	if (!PyObject_TypeCheck(b, Py_TYPE(a)) || (op != Py_EQ && op != Py_NE)) {
		Py_RETURN_NOTIMPLEMENTED;
	}
	int eq = ((ChannelObject *)a)->q == ((ChannelObject *)b)->q;
	return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t chan_hash(PyObject *self) {
	Py_hash_t h = (Py_hash_t)pyw_queue_id(((ChannelObject *)self)->q);
	return h == -1 ? -2 : h;
}

static PyMethodDef chan_methods[] = {
    {"create", (PyCFunction)(void (*)(void))chan_create, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Channel.create(capacity=0): a new channel (0: unbounded). Others open it with Channel(ch.id)."},
    {"send", (PyCFunction)(void (*)(void))chan_send, METH_FASTCALL | METH_KEYWORDS,
     "send(obj, timeout=None): put a copy of obj in the channel, waiting while it is full.\n"
     "obj: None, bool, int, float, str, bytes, tuple, list, dict with str keys, pyworkers.Buffer.\n"
     "Raises TypeError (nothing sent) for anything else, ChannelClosed, TimeoutError\n"
     "(ChannelFull with timeout=0)."},
    {"send_nowait", chan_send_nowait, METH_O, "send_nowait(obj): send without waiting; ChannelFull if full."},
    {"recv", (PyCFunction)(void (*)(void))chan_recv, METH_FASTCALL | METH_KEYWORDS,
     "recv(timeout=None): the next item, waiting (GIL released) while the channel is empty.\n"
     "Raises ChannelClosed once the channel is closed and drained, TimeoutError (ChannelEmpty\n"
     "with timeout=0)."},
    {"recv_nowait", chan_recv_nowait, METH_NOARGS, "recv_nowait(): the next item; ChannelEmpty if none."},
    {"send_many", (PyCFunction)(void (*)(void))chan_send_many, METH_VARARGS | METH_KEYWORDS,
     "send_many(items, timeout=None): send every item, in order, taking the queue's lock once per\n"
     "batch rather than once per item. Every item is checked first: a TypeError sends nothing.\n"
     "Returns how many were sent. ChannelClosed, TimeoutError (ChannelFull with timeout=0) or\n"
     "KeyboardInterrupt part-way leaves the rest unsent: the exception's sent attribute says\n"
     "how many went."},
    {"recv_many", (PyCFunction)(void (*)(void))chan_recv_many, METH_VARARGS | METH_KEYWORDS,
     "recv_many(max=64, timeout=None): wait for an item like recv(), and return it in a list with\n"
     "up to max-1 more that are already waiting."},
    {"close", chan_close, METH_NOARGS,
     "close(): no more sends; receivers get what is left, then ChannelClosed. True if this call closed it."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef chan_getset[] = {
    {"id", chan_get_id, NULL, "The channel's id: Channel(id) opens it in any interpreter, Go's channels.Open too.", NULL},
    {"capacity", chan_get_capacity, NULL, "How many items it holds before send waits (0: unbounded).", NULL},
    {"closed", chan_get_closed, NULL, "Whether close() has been called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot chan_slots[] = {
    {Py_tp_new, chan_new},
    {Py_tp_dealloc, chan_dealloc},
    {Py_tp_repr, chan_repr},
    {Py_tp_methods, chan_methods},
    {Py_tp_getset, chan_getset},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, chan_iternext},
    {Py_tp_richcompare, chan_richcompare},
    {Py_tp_hash, chan_hash},
    {Py_sq_length, chan_len},
    {Py_tp_doc, "Channel(id): a pyworkers channel, a queue between interpreters and Go.\n\n"
                "Items cross by value (no pickle) and outlive the interpreter that sent them; each is\n"
                "received exactly once. Iterating receives until the channel is closed and drained."},
    {0, NULL},
};

static PyType_Spec chan_spec = {
    .name = "pyworkers.Channel",
    .basicsize = sizeof(ChannelObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = chan_slots,
};

static int add_exception(PyObject *m, const char *name, const char *doc) {
	char qual[64];
	snprintf(qual, sizeof qual, "pyworkers.%s", name);
	PyObject *e = PyErr_NewExceptionWithDoc(qual, doc, NULL, NULL);
	if (e == NULL) {
		return -1;
	}
	int rc = PyModule_AddObjectRef(m, name, e);
	Py_DECREF(e);
	return rc;
}

static int channels_exec(PyObject *m) {
	PyObject *t = PyType_FromModuleAndSpec(m, &chan_spec, NULL);
	if (t == NULL) {
		return -1;
	}
	int rc = PyModule_AddObjectRef(m, "Channel", t);
	Py_DECREF(t);
	if (rc < 0 || add_exception(m, "ChannelClosed", "The channel is closed (and, for recv, drained).") < 0 ||
	    add_exception(m, "ChannelEmpty", "recv_nowait() found the channel empty.") < 0 ||
	    add_exception(m, "ChannelFull", "send_nowait() found the channel full.") < 0) {
		return -1;
	}
	return 0;
}

int pyw_channels_register(void) { return pyw_module_add_ext(channels_exec); }
