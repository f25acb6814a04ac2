// module.c — pyworkers, the built-in module of every pyworkers interpreter (`import pyworkers`).
// Multi-phase init, per-module state only, safe in own-GIL interpreters. Its C part is the
// bridge to Go (_write, _flush); cpython/bootstrap.py adds the Python-level API.
#include "pyw.h"

#include "_cgo_export.h"

#include <errno.h>
#include <time.h>

typedef struct {
	uintptr_t handle;      /* cgo.Handle of the Go *Interpreter; 0 until set */
	pyw_interp *interp;    /* its C side; NULL until set */
	PyObject *buffer_type; /* pyworkers.Buffer of this interpreter */
} modstate;

static modstate *state_of(PyObject *m) { return (modstate *)PyModule_GetState(m); }

/* The OSError of a failed write to a Go writer (rc and why from pywGoWrite or pywGoFlush): with
 * the errno the writer's error carried, when rc is one, as a file's write would raise it
 * (BrokenPipeError, ...); why, the error's text, is freed. NULL. */
static PyObject *write_failed(int rc, char *why) {
	PyObject *msg = PyUnicode_FromFormat("pyworkers: the Go writer for this stream failed: %s", why ? why : "(no text)");
	free(why);
	if (msg == NULL) {
		return NULL;
	}
	PyObject *args = rc > 0 ? Py_BuildValue("(iO)", rc, msg) : PyTuple_Pack(1, msg);
	Py_DECREF(msg);
	if (args != NULL) {
		PyErr_SetObject(PyExc_OSError, args); /* OSError(errno, text) picks the subclass */
		Py_DECREF(args);
	}
	return NULL;
}

/* pyworkers._write(fd, data): hand text (as UTF-8) or bytes (as they are) to the Go writer for fd
 * (1 stdout, 2 stderr). */
static PyObject *mod_write(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
	if (nargs != 2 || !PyLong_Check(args[0]) || !(PyUnicode_Check(args[1]) || PyBytes_Check(args[1]))) {
		PyErr_SetString(PyExc_TypeError, "_write(fd: int, data: str | bytes)");
		return NULL;
	}
	int fd = PyLong_AsInt(args[0]);
	if (fd == -1 && PyErr_Occurred()) {
		return NULL;
	}
	Py_ssize_t n;
	const char *s;
	if (PyBytes_Check(args[1])) {
		s = PyBytes_AS_STRING(args[1]);
		n = PyBytes_GET_SIZE(args[1]);
	} else if ((s = PyUnicode_AsUTF8AndSize(args[1], &n)) == NULL) {
		return NULL;
	}
	uintptr_t h = state_of(m)->handle;
	if (h == 0) {
		PyErr_SetString(PyExc_RuntimeError, "pyworkers output is not connected");
		return NULL;
	}
	int rc, mine = pyw_on_own_thread(state_of(m)->interp);
	char *why = NULL;
	/* args[1] keeps s alive while the GIL is released for a possibly slow writer, which may wait
	 * on a channel: an interrupt already raised (and caught) must not end that wait */
	PYW_BEGIN_WAIT(state_of(m)->interp)
	rc = pywGoWrite(h, fd, (char *)s, (size_t)n, mine, &why);
	Py_END_ALLOW_THREADS
	if (rc != 0) {
		return write_failed(rc, why);
	}
	Py_RETURN_NONE;
}

/* pyworkers._flush(fd): write out a partial line. */
static PyObject *mod_flush(PyObject *m, PyObject *arg) {
	int fd = PyLong_AsInt(arg);
	if (fd == -1 && PyErr_Occurred()) {
		return NULL;
	}
	uintptr_t h = state_of(m)->handle;
	if (h == 0) {
		Py_RETURN_NONE;
	}
	int rc;
	char *why = NULL;
	PYW_BEGIN_WAIT(state_of(m)->interp)
	rc = pywGoFlush(h, fd, &why);
	Py_END_ALLOW_THREADS
	if (rc != 0) {
		return write_failed(rc, why);
	}
	Py_RETURN_NONE;
}

/* ---- pyworkers.Buffer: a shared buffer (pyw_shared) as a Python object */

typedef struct {
	PyObject_HEAD pyw_shared *sh;
	int readonly;
} BufferObject;

static PyObject *buffer_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
	static char *kwlist[] = {"size", NULL};
	Py_ssize_t n;
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:Buffer", kwlist, &n)) {
		return NULL;
	}
	if (n < 0) {
		PyErr_SetString(PyExc_ValueError, "Buffer size must not be negative");
		return NULL;
	}
	pyw_shared *sh = pyw_shared_new((size_t)n);
	if (sh == NULL) {
		return PyErr_NoMemory();
	}
	BufferObject *self = (BufferObject *)type->tp_alloc(type, 0);
	if (self == NULL) {
		pyw_shared_decref(sh);
		return NULL;
	}
	self->sh = sh;
	self->readonly = 0;
	return (PyObject *)self;
}

static void buffer_dealloc(PyObject *o) {
	BufferObject *self = (BufferObject *)o;
	PyTypeObject *tp = Py_TYPE(o);
	if (self->sh != NULL) {
		pyw_shared_decref(self->sh);
	}
	tp->tp_free(o);
	Py_DECREF(tp);
}

static int buffer_getbuffer(PyObject *o, Py_buffer *view, int flags) {
	BufferObject *self = (BufferObject *)o;
	return PyBuffer_FillInfo(view, o, self->sh->data, (Py_ssize_t)self->sh->len, self->readonly, flags);
}

static Py_ssize_t buffer_len(PyObject *o) { return (Py_ssize_t)((BufferObject *)o)->sh->len; }

static PyObject *buffer_repr(PyObject *o) {
	BufferObject *self = (BufferObject *)o;
	return PyUnicode_FromFormat("<pyworkers.Buffer of %zu bytes%s>", self->sh->len, self->readonly ? ", read-only" : "");
}

static PyObject *buffer_get_readonly(PyObject *o, void *closure) {
	(void)closure;
	return PyBool_FromLong(((BufferObject *)o)->readonly);
}

static PyGetSetDef buffer_getset[] = {
    {"readonly", buffer_get_readonly, NULL, "True for a buffer received from elsewhere.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot buffer_slots[] = {
    {Py_tp_new, buffer_new},
    {Py_tp_dealloc, buffer_dealloc},
    {Py_tp_repr, buffer_repr},
    {Py_tp_getset, buffer_getset},
    {Py_bf_getbuffer, buffer_getbuffer},
    {Py_sq_length, buffer_len},
    {Py_tp_doc, "Buffer(size): zeroed memory shared between interpreters and Go without copying.\n\n"
                "Write into memoryview(buf), then send buf over a pyworkers.Channel (or return it to Go):\n"
                "the receiver gets a read-only memoryview of the same memory. Do not change a buffer\n"
                "after sending it: the receiver sees the change."},
    {0, NULL},
};

static PyType_Spec buffer_spec = {
    .name = "pyworkers.Buffer",
    .basicsize = sizeof(BufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = buffer_slots,
};

static PyModuleDef moddef;

/* m's state when m is this module (an instance of it), else NULL, no exception:
 * sys.modules['pyworkers'] may have been replaced or cleared, and only our own is trusted. */
static modstate *ours(PyObject *m) {
	return m != NULL && PyModule_Check(m) && PyModule_GetDef(m) == &moddef ? state_of(m) : NULL;
}

/* sys.modules['pyworkers'] (a new reference), or NULL with an exception. A plain look-up in the
 * module dict, not PyImport_GetModule: that one may run importlib's Python code (a module still
 * being imported), and the decoder calls this with containers half built. Through sys, not
 * PyImport_GetModuleDict, which ends the process once the interpreter's end has cleared its
 * modules: a finalizer run by the last collection may still receive a Buffer. */
static PyObject *current_module(void) {
	PyObject *m = NULL, *mods = PySys_GetObject("modules"); /* borrowed */
	int rc = mods != NULL && PyDict_Check(mods) ? PyDict_GetItemStringRef(mods, "pyworkers", &m) : 0;
	if (rc == 0) {
		PyErr_SetString(PyExc_RuntimeError, "the pyworkers module is not loaded in this interpreter");
	}
	return m;
}

/* The pyworkers.Buffer type of the current interpreter (borrowed), or NULL with an exception. */
static PyObject *current_buffer_type(void) {
	PyObject *m = current_module();
	if (m == NULL) {
		return NULL;
	}
	modstate *st = ours(m);
	PyObject *t = st ? st->buffer_type : NULL;
	Py_DECREF(m); /* sys.modules keeps the module, the module keeps the type */
	if (t == NULL) {
		PyErr_Clear();
		PyErr_SetString(PyExc_RuntimeError, "sys.modules['pyworkers'] is not pyworkers' module: cannot make a Buffer");
	}
	return t;
}

PyObject *pyw_buffer_wrap(pyw_shared *s, int readonly) {
	PyTypeObject *t = (PyTypeObject *)current_buffer_type();
	if (t == NULL) {
		return NULL;
	}
	BufferObject *self = (BufferObject *)t->tp_alloc(t, 0);
	if (self == NULL) {
		return NULL;
	}
	pyw_shared_incref(s);
	self->sh = s;
	self->readonly = readonly;
	return (PyObject *)self;
}

pyw_shared *pyw_buffer_shared(PyObject *o) {
	/* Buffer cannot be subclassed, and every interpreter's Buffer type has this dealloc: an
	 * exact test that costs no lookup (PyType_GetModuleByDef raises, for any other heap type
	 * such as a namedtuple, an exception that would have to be made and cleared each time). */
	if (Py_TYPE(o)->tp_dealloc != buffer_dealloc) {
		return NULL;
	}
	return ((BufferObject *)o)->sh;
}

/* ---- extensions from other packages */

#define MAX_EXTS 8
static int (*exts[MAX_EXTS])(PyObject *);
static int nexts;

int pyw_module_add_ext(int (*fn)(PyObject *module)) {
	if (nexts == MAX_EXTS) {
		return -1;
	}
	exts[nexts++] = fn;
	return 0;
}

/* pyworkers._interrupted(): whether the task running on this thread has been interrupted. */
static PyObject *mod_interrupted(PyObject *m, PyObject *unused) {
	(void)m;
	(void)unused;
	return PyBool_FromLong(pyw_task_interrupted());
}

/* pyworkers._copy(v): a copy of v, a value as the wire carries it, through the codec: new
 * containers to any depth the wire allows (a copy in Python would recurse ten times less deep
 * before RecursionError). pyworkers.config() hands these out. */
static PyObject *mod_copy(PyObject *m, PyObject *v) {
	(void)m;
	pyw_buf b = {NULL, 0, 0};
	pyw_enc_err e;
	if (pyw_encode(&b, NULL, 0, v, &e) < 0) {
		pyw_buf_free(&b);
		return PyErr_Format(e.nomem ? PyExc_MemoryError : PyExc_TypeError, "cannot copy this value: %s%s%s", e.path, e.path[0] ? ": " : "", e.msg);
	}
	const char *p = b.data;
	PyObject *o = pyw_decode(&p, b.data + b.len, NULL, 0);
	pyw_buf_free(&b);
	return o;
}

/* pyworkers._hold_if_interrupted(): if the running task was interrupted, it is ending on it: no
 * more interrupts of it (see pyw_hold_if_interrupted). Whether it was. One call: an interrupt
 * repeated meanwhile cannot land between the test and the hold. */
static PyObject *mod_hold_if_interrupted(PyObject *m, PyObject *unused) {
	(void)m;
	(void)unused;
	return PyBool_FromLong(pyw_hold_if_interrupted());
}

/* pyworkers.sleep on a thread the interpreter's code started: until deadline, or until the
 * interpreter's wind-down interrupts its threads, whose KeyboardInterrupt, pending on this one,
 * the eval loop then raises as the call returns. */
/* pyworkers.sleep(secs): time.sleep, except that an interrupt of the task sleeping (its context
 * ended) ends it at once, with KeyboardInterrupt. CPython's own sleep notices an interrupt only
 * when it has slept its time: signals, which would cut it short, reach only the main
 * interpreter. bootstrap.setup makes it every interpreter's time.sleep. On the other threads
 * (threads the task started) only the interrupts of the interpreter's end (CloseContext) cut
 * it short. */
static PyObject *mod_sleep(PyObject *m, PyObject *arg) {
	double secs;
	if (PyFloat_Check(arg)) {
		secs = PyFloat_AS_DOUBLE(arg);
	} else if (PyIndex_Check(arg)) { /* ints, as time.sleep takes them: not anything with __float__ */
		PyObject *i = PyNumber_Index(arg);
		secs = i ? PyLong_AsDouble(i) : -1.0;
		Py_XDECREF(i);
		if (secs == -1.0 && PyErr_Occurred()) {
			return NULL;
		}
	} else {
		return PyErr_Format(PyExc_TypeError, "'%T' object cannot be interpreted as an integer or float", arg);
	}
	if (secs != secs) {
		PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
		return NULL;
	}
	if (secs < 0) {
		PyErr_SetString(PyExc_ValueError, "sleep length must be non-negative");
		return NULL;
	}
	if (secs >= 9e9) { /* past what a 64-bit count of nanoseconds holds (292 years) */
		PyErr_SetString(PyExc_OverflowError, "sleep length is too large");
		return NULL;
	}
	int64_t ns = (int64_t)(secs * 1e9);
	ns += (double)ns < secs * 1e9; /* rounded up, as CPython rounds a timeout */
	struct timespec deadline;
	pyw_deadline_after(&deadline, ns);
	pyw_interp *w = state_of(m)->interp;
	if (pyw_interrupt_pending(w)) { /* injected, not raised yet: the wait would not see it */
		return pyw_raise_interrupt();
	}
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv;
	pyw_cond_init_monotonic(&cv);
	int interrupted = 0;
	PYW_BEGIN_WAIT(w) /* on the interpreter's other threads too: its end's interrupts end it */
	pyw_wait_begin(&mu, &cv); /* before mu: the interpreter's wait_mu (others_mu) comes first */
	pthread_mutex_lock(&mu);
	while (!(interrupted = pyw_wait_interrupted())) {
		if (pthread_cond_timedwait(&cv, &mu, &deadline) == ETIMEDOUT) {
			break;
		}
	}
	pthread_mutex_unlock(&mu);
	pyw_wait_end();
	Py_END_ALLOW_THREADS
	pthread_cond_destroy(&cv);
	if (interrupted) {
		return pyw_raise_interrupt();
	}
	Py_RETURN_NONE;
}

/* pyworkers._unraisablehook(u), every interpreter's sys.unraisablehook (bootstrap.setup): an
 * interrupt that lands in code whose exceptions CPython ignores (a weakref callback, a __del__,
 * often during an import) would be lost, and the task would run on; it is raised again instead
 * of printed as ignored. In C: Python code run after the new injection, in a hook written in
 * Python, would take the interrupt itself, and lose it the same way. */
static PyObject *mod_unraisablehook(PyObject *m, PyObject *u) {
	(void)m;
	PyObject *t = PyObject_GetAttrString(u, "exc_type");
	if (t == NULL) {
		return NULL;
	}
	int ours = t == PyExc_KeyboardInterrupt && pyw_reinterrupt();
	Py_DECREF(t);
	if (ours) {
		Py_RETURN_NONE;
	}
	PyObject *dflt = Py_XNewRef(PySys_GetObject("__unraisablehook__")); /* the call may rebind it */
	if (dflt == NULL) {
		Py_RETURN_NONE;
	}
	PyObject *r = PyObject_CallOneArg(dflt, u);
	Py_DECREF(dflt);
	return r;
}

/* pyworkers._set_wake_fd(fd): the socket an interrupt of this interpreter writes a byte to, to
 * wake its event loop (bootstrap._new_loop); -1 for none. */
static PyObject *mod_set_wake_fd(PyObject *m, PyObject *arg) {
	(void)m;
	int fd = PyLong_AsInt(arg);
	if (fd == -1 && PyErr_Occurred()) {
		return NULL;
	}
	pyw_set_wake_fd(fd);
	Py_RETURN_NONE;
}

/* pyworkers._shield(on): defer interrupts of the running task while bootstrap code that must
 * not be cut short runs (see shielded in pyw.h). */
static PyObject *mod_shield(PyObject *m, PyObject *arg) {
	(void)m;
	int on = PyObject_IsTrue(arg);
	if (on < 0) {
		return NULL;
	}
	pyw_set_shielded(on);
	Py_RETURN_NONE;
}

/* pyworkers._owe_interrupt(on): see pyw_owe_interrupt. */
static PyObject *mod_owe_interrupt(PyObject *m, PyObject *arg) {
	(void)m;
	int on = PyObject_IsTrue(arg);
	if (on < 0) {
		return NULL;
	}
	return PyBool_FromLong(pyw_owe_interrupt(on));
}

/* pyworkers._set_main(coro): the coroutine of the async call running now on the event loop
 * (bootstrap._run_async), or None. */
static PyObject *mod_set_main(PyObject *m, PyObject *coro) {
	(void)m;
	pyw_set_main_coro(coro);
	Py_RETURN_NONE;
}

/* pyworkers._take_cancel(): whether an interrupt asked the event loop to cancel the async call
 * running now (bootstrap._drain); the request is taken. */
static PyObject *mod_take_cancel(PyObject *m, PyObject *unused) {
	(void)m;
	(void)unused;
	return PyBool_FromLong(pyw_take_cancel());
}

static PyMethodDef methods[] = {
    {"_write", (PyCFunction)(void (*)(void))mod_write, METH_FASTCALL, "write(fd, data): send text (UTF-8) or bytes to the Go side."},
    {"_flush", mod_flush, METH_O, "flush(fd): write out a pending partial line."},
    {"_interrupted", mod_interrupted, METH_NOARGS, "_interrupted(): whether the running task was interrupted."},
    {"_copy", mod_copy, METH_O, "_copy(v): a copy of a value as pyworkers carries it, containers new."},
    {"_hold_if_interrupted", mod_hold_if_interrupted, METH_NOARGS, "_hold_if_interrupted(): if the task was interrupted, no more interrupts of it."},
    {"_set_wake_fd", mod_set_wake_fd, METH_O, "_set_wake_fd(fd): the socket an interrupt writes a byte to (-1: none)."},
    {"_shield", mod_shield, METH_O, "_shield(on): defer interrupts of the running task (up to a second) while on."},
    {"_owe_interrupt", mod_owe_interrupt, METH_O, "_owe_interrupt(on): while on, an interrupted task is interrupted again within 50 ms."},
    {"_set_main", mod_set_main, METH_O, "_set_main(coro): the coroutine of the async call running now, or None."},
    {"_take_cancel", mod_take_cancel, METH_NOARGS, "_take_cancel(): whether an interrupt asked to cancel the async call."},
    {"_unraisablehook", mod_unraisablehook, METH_O, "sys.unraisablehook that raises a swallowed interrupt of the running task again."},
    {"sleep", mod_sleep, METH_O,
     "sleep(seconds)\n--\n\nDelay execution for a given number of seconds, as time.sleep does (it is this\n"
     "interpreter's time.sleep), except that an interrupt of the task (its context ended) ends\n"
     "the sleep at once with KeyboardInterrupt."},
    {NULL, NULL, 0, NULL},
};

/* The key, in the interpreter's dict, of a weak reference to its first pyworkers module. */
#define FIRST_KEY "pyworkers.first_module"

/* The interpreter's first pyworkers module (new reference), or NULL (with no error) when none is
 * alive; -1 on error. */
static int first_module(PyObject **first) {
	*first = NULL;
	PyObject *d = PyInterpreterState_GetDict(PyInterpreterState_Get()), *ref;
	if (d == NULL) {
		PyErr_SetString(PyExc_RuntimeError, "pyworkers: no interpreter dict");
		return -1;
	}
	int found = PyDict_GetItemStringRef(d, FIRST_KEY, &ref);
	if (found <= 0) {
		return found;
	}
	int rc = PyWeakref_GetRef(ref, first);
	Py_DECREF(ref);
	return rc < 0 ? -1 : 0;
}

static int remember_first(PyObject *m) {
	PyObject *d = PyInterpreterState_GetDict(PyInterpreterState_Get());
	PyObject *ref = d ? PyWeakref_NewRef(m, NULL) : NULL;
	int rc = ref ? PyDict_SetItemString(d, FIRST_KEY, ref) : -1;
	Py_XDECREF(ref);
	return rc;
}

static int mod_exec(PyObject *m) {
	modstate *st = state_of(m);
	st->handle = 0;
	PyObject *first;
	if (first_module(&first) < 0) {
		return -1;
	}
	if (first != NULL) {
		/* Imported again, after code took it out of sys.modules: the same module in all but
		 * identity — its link to Go, its types (a Channel's interpreter comes from its type's
		 * module) and the API bootstrap.py added. A module of its own would have none of these. */
		modstate *fs = state_of(first);
		st->handle = fs->handle;
		st->interp = fs->interp;
		st->buffer_type = Py_XNewRef(fs->buffer_type);
		int rc = PyDict_Update(PyModule_GetDict(m), PyModule_GetDict(first));
		Py_DECREF(first);
		return rc;
	}
	st->buffer_type = PyType_FromModuleAndSpec(m, &buffer_spec, NULL);
	if (st->buffer_type == NULL || PyModule_AddObjectRef(m, "Buffer", st->buffer_type) < 0) {
		return -1;
	}
	for (int i = 0; i < nexts; i++) {
		if (exts[i](m) < 0) {
			return -1;
		}
	}
	return remember_first(m);
}

static int mod_traverse(PyObject *m, visitproc visit, void *arg) {
	modstate *st = state_of(m);
	Py_VISIT(st->buffer_type);
	return 0;
}

static int mod_clear(PyObject *m) {
	modstate *st = state_of(m);
	Py_CLEAR(st->buffer_type);
	return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, mod_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
    {0, NULL},
};

static PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyworkers",
    .m_doc = "pyworkers: this interpreter's link to the Go program that runs it.",
    .m_size = sizeof(modstate),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = mod_traverse,
    .m_clear = mod_clear,
};

PyObject *pyw_module_init(void) { return PyModuleDef_Init(&moddef); }

pyw_interp *pyw_module_interp(PyObject *m) {
	modstate *st = ours(m);
	return st ? st->interp : NULL;
}

int pyw_module_set_handle(PyObject *module, uintptr_t handle, pyw_interp *w) {
	modstate *st = ours(module);
	if (st == NULL) {
		/* something else took sys.modules['pyworkers'] first (a .pth file's import) */
		PyErr_Clear();
		PyErr_SetString(PyExc_ImportError, "sys.modules['pyworkers'] is not pyworkers' module");
		return -1;
	}
	st->handle = handle;
	st->interp = w;
	return 0;
}
