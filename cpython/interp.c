// interp.c — own-GIL interpreters: create, run, call, interrupt, end.
#include "pyw.h"

#include <sys/socket.h>

#include <marshal.h>
#include <stdatomic.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Output buffers above this size are given back after the call that grew them. */
#define PYW_OUT_KEEP (1u << 24)

static PyObject *str_or_replace(const char *s) { return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace"); }

/* The interpreter whose own thread this is (NULL on any other thread). */
static _Thread_local pyw_interp *current;

/* Encodes o, a call's return value (with outcomes: call_many's list, see pyw_encode_outcomes),
 * into out as the whole result (shared buffers into refs); a value that has no encoding becomes
 * PYW_CONVERT with (path, message). */
static pyw_result encode_into(pyw_buf *out, pyw_refs *refs, PyObject *o, int outcomes) {
	pyw_result r = {PYW_OK, NULL, 0, 0, NULL, 0};
	pyw_enc_err e;
	out->len = 0; /* refs: cleared by the decoder (pyw_result.held), or else by begin() */
	if ((outcomes ? pyw_encode_outcomes(out, refs, o, &e) : pyw_encode(out, refs, 0, o, &e)) == 0) {
		r.data = out->data;
		r.len = out->len;
		if (refs != NULL) {
			r.refs = refs->v;
			r.nrefs = refs->n;
			r.held = refs;
		}
		return r;
	}
	/* o itself has no encoding: report where and why, as (path, message) */
	PyObject *t = PyTuple_New(2);
	PyObject *p = str_or_replace(e.path), *m = str_or_replace(e.msg);
	if (t == NULL || p == NULL || m == NULL) {
		Py_XDECREF(p);
		Py_XDECREF(m);
		Py_XDECREF(t);
		PyErr_Clear();
		r.status = PYW_FAILED;
		return r;
	}
	PyTuple_SET_ITEM(t, 0, p);
	PyTuple_SET_ITEM(t, 1, m);
	out->len = 0;
	if (pyw_encode(out, NULL, 0, t, &e) < 0) {
		r.status = PYW_FAILED;
	} else {
		r.status = PYW_CONVERT;
		r.data = out->data;
		r.len = out->len;
	}
	Py_DECREF(t);
	return r;
}

/* Turns the pending Python exception into an encoded (type, message, traceback). */
static pyw_result capture_error(pyw_buf *out, PyObject *helpers) {
	PyObject *exc = PyErr_GetRaisedException();
	PyObject *fmt = helpers ? PyDict_GetItemString(helpers, "format_exc") : NULL; /* borrowed */
	PyObject *t = (fmt && exc) ? PyObject_CallOneArg(fmt, exc) : NULL;
	if (t == NULL) {
		/* No format_exc (an error while the interpreter was being set up) or it failed: the type
		 * and what the exception says, without a traceback. */
		PyErr_Clear();
		const char *name = exc ? Py_TYPE(exc)->tp_name : "SystemError";
		/* the task's interrupt cut format_exc short: its __str__ may be what hangs */
		int spare = exc == NULL || pyw_task_interrupted();
		PyObject *msg = spare ? NULL : PyObject_Str(exc);
		if (msg != NULL && PyUnicode_AsUTF8AndSize(msg, NULL) == NULL) {
			Py_CLEAR(msg); /* lone surrogates: ascii() below has none */
		}
		if (msg == NULL && !(spare = spare || pyw_task_interrupted())) {
			PyErr_Clear();
			msg = PyObject_ASCII(exc);
		}
		if (msg == NULL) {
			PyErr_Clear();
			msg = PyUnicode_FromString(spare && exc != NULL ? "<not formatted: the task was interrupted>"
			                                                : "<pyworkers could not format this exception>");
		}
		t = msg ? Py_BuildValue("(NOO)", str_or_replace(name), msg, msg) : NULL;
		if (t != NULL) {
			PyObject *tb = PyUnicode_FromFormat("%s: %U\n", name, msg);
			if (tb == NULL || PyTuple_SetItem(t, 2, tb) < 0) { /* steals tb */
				Py_CLEAR(t);
			}
		}
		Py_XDECREF(msg);
		if (t == NULL) {
			PyErr_Clear();
		}
	}
	Py_XDECREF(exc);
	pyw_result r = {PYW_FAILED, NULL, 0, 0, NULL, 0};
	if (t == NULL) {
		return r;
	}
	pyw_enc_err e;
	out->len = 0;
	if (pyw_encode(out, NULL, 0, t, &e) == 0) {
		r.status = PYW_PYERR;
	} else { /* its own (type, message, traceback) did not encode: say so in plain text */
		out->len = 0;
		pyw_buf_printf(out, "cannot report a Python error: at %s: %s", e.path, e.msg);
	}
	Py_DECREF(t);
	r.data = out->data;
	r.len = out->len;
	return r;
}

/* Injects KeyboardInterrupt into the task (GIL held) and flags our waits to return. */
/* Sets bootstrap's _batch_interrupted (see batch_task). Without memory for the key's string it
 * stays as it was: unset, the batch runs on as if the flag did not exist; left set, call_many
 * asks interrupted() before it believes it. */
static void flag_batch(pyw_interp *w, int on) {
	if (w->batch_flagged == on || w->helpers == NULL) {
		return;
	}
	PyObject *pending = PyErr_GetRaisedException();
	if (PyDict_SetItemString(w->helpers, "_batch_interrupted", on ? Py_True : Py_False) == 0) {
		w->batch_flagged = on;
	}
	PyErr_Clear();
	PyErr_SetRaisedException(pending);
}

static void inject(pyw_interp *w, uint64_t task) {
	w->interrupted_task = task;
	w->injections++;
	PyThreadState_SetAsyncExc(w->thread_ident, PyExc_KeyboardInterrupt);
	atomic_store(&w->interrupt_pending, 1);
	if (task != 0 && atomic_load(&w->batch_task) == task) {
		flag_batch(w, 1);
	}
}

/* Whether an interrupt injected into thread state t now could be raised in the import system's
 * own code (importlib: _frozen_importlib, _frozen_importlib_external). Raised there, between a
 * lock's acquire and its release, it can leave the import's locks half-way (a module's lock
 * taken, or the next waiter for it never woken: every thread that imports that module later
 * waits for good, and so does the wind-down that joins them; seen with a thread's excepthook
 * importing traceback as the interpreter wound down), so it is not injected then
 * (PYW_DEFERRED). The injected exception is raised at t's next check, which may come only once
 * its innermost frame has returned (a return has none): so the frames are walked out from the
 * innermost to a module's top-level code (which importlib runs, and which an exception unwinds
 * through importlib, undoing the import; top-level code is entered from C, so a check follows
 * its return in its caller), and an importlib frame before that defers it; so do the finders,
 * finalizers and other code importlib calls. Unless patient is 0 (the interrupt
 * has waited a second): then only importlib's own frame innermost does, and code importlib
 * calls that runs that long (a finder that hangs) is interrupted after all, where it almost
 * surely checks again before it returns. With the GIL held: t is not running. */
static int in_importlib(PyThreadState *t, int patient) {
	PyObject *mods = PySys_GetObject("modules"); /* borrowed */
	PyObject *dicts[2] = {NULL, NULL};
	if (mods != NULL && PyDict_Check(mods)) {
		static const char *const names[] = {"_frozen_importlib", "_frozen_importlib_external"};
		for (size_t k = 0; k < 2; k++) {
			PyObject *m = PyDict_GetItemString(mods, names[k]); /* borrowed */
			dicts[k] = m != NULL && PyModule_Check(m) ? PyModule_GetDict(m) : NULL;
		}
	}
	if (dicts[0] == NULL && dicts[1] == NULL) {
		return 0;
	}
	int r = 0;
	PyFrameObject *f = PyThreadState_GetFrame(t);
	while (f != NULL) {
		PyObject *g = PyFrame_GetGlobals(f);
		r = g != NULL && (g == dicts[0] || g == dicts[1]);
		Py_XDECREF(g);
		PyCodeObject *co = PyFrame_GetCode(f);
		int top = PyUnicode_EqualToUTF8(co->co_name, "<module>");
		Py_DECREF(co);
		if (r || top || !patient) {
			break;
		}
		PyFrameObject *back = PyFrame_GetBack(f);
		Py_SETREF(f, back);
	}
	Py_XDECREF(f);
	PyErr_Clear(); /* a frame object that could not be made: the walk ends there */
	return r;
}

/* Takes back an injected interrupt that was not raised yet (GIL held). */
static void withdraw(pyw_interp *w) {
	PyThreadState_SetAsyncExc(w->thread_ident, NULL);
	atomic_store(&w->interrupt_pending, 0);
}

/* What the entry points below return when called on another thread than the interpreter's
 * own (a Thread used from the wrong goroutine): its thread state is not theirs to attach. */
#define OWN_THREAD_ONLY(w)                                                                                 \
	do {                                                                                               \
		if ((w) == NULL || current != (w)) { /* NULL: an ended interpreter's, on any thread */ \
			pyw_result wrong = {PYW_WRONG_THREAD, NULL, 0, 0, NULL, 0};                        \
			return wrong;                                                                      \
		}                                                                                          \
	} while (0)

/* Module name if it has been imported (a new reference), else NULL; never an exception. */
static PyObject *imported(const char *name) {
	/* sys.modules itself: PyImport_GetModule runs importlib's code (_lock_unlock_module) for a
	 * module being imported, which on an interrupter's thread (inject_others) would wait on that
	 * import's lock, and could run a finalizer there (a collection). */
	PyObject *m = NULL, *mods = PySys_GetObject("modules"); /* borrowed */
	if (mods != NULL && PyDict_Check(mods)) {
		(void)PyDict_GetItemStringRef(mods, name, &m);
	}
	PyErr_Clear();
	return m;
}

/* Whether the interpreter's other threads are due an interrupt: at the first, then once a
 * second at most. Not every 100 ms, as CloseContext repeats it: library code in them does not
 * expect KeyboardInterrupt, and each one may land where it leaves a lock held (a `with lock:`
 * entered but not yet protected), or keep a thread that is starting from saying it has. */
static int others_due(pyw_interp *w) {
	return w->others_at == 0 || pyw_monotonic_ns() - w->others_at >= 1000000000;
}

/* Whether the thread state numbered id (PyThreadState_GetID: never reused, unlike a thread's
 * ident) was interrupted in this round of inject_others. */
static int others_hit(const pyw_interp *w, uint64_t id) {
	for (size_t k = 0; k < w->others_nhit; k++) {
		if (w->others_hit[k] == id) {
			return 1;
		}
	}
	return 0;
}

/* The interrupt of an interpreter winding down (pyw_interp_wind_down), which waits for its other
 * threads: KeyboardInterrupt for each of them too (not the interrupter's own, self). With the
 * GIL held, under which none of them is deleted (a thread deletes its own state with the GIL),
 * nor, in an interpreter that refuses daemon threads, created but by these threads. */
static void inject_others(pyw_interp *w, PyThreadState *self) {
	/* While threading starts a thread (threading._limbo), an interrupt before the new thread has
	 * said it started (Thread._started) would keep the thread that starts it waiting for good,
	 * where no interrupt reaches: only threads threading has noted as running (threading._active,
	 * by ident) are interrupted then, and the others at the next interrupt; so are threads that
	 * run importlib's code now (in_importlib). A round's threads are noted (others_hit): the
	 * next interrupts before the next round reach only those it left out. */
	int fresh = others_due(w);
	if (fresh) {
		w->others_at = pyw_monotonic_ns();
		w->others_nhit = 0;
		w->others_rounds++;
	}
	PyObject *threading = imported("threading");
	PyObject *limbo = threading ? PyObject_GetAttrString(threading, "_limbo") : NULL;
	PyObject *active = NULL;
	if (limbo != NULL && PyDict_Check(limbo) && PyDict_GET_SIZE(limbo) > 0) {
		active = PyObject_GetAttrString(threading, "_active");
		if (active != NULL && !PyDict_Check(active)) {
			Py_CLEAR(active);
		}
	}
	Py_XDECREF(limbo);
	Py_XDECREF(threading);
	PyErr_Clear();
	int skipped = 0;
	for (PyThreadState *t = PyInterpreterState_ThreadHead(w->interp); t != NULL; t = PyThreadState_Next(t)) {
		uint64_t ts_id = PyThreadState_GetID(t);
		if (t == self || t == w->tstate || t->thread_id == 0 || others_hit(w, ts_id)) {
			continue; /* thread_id 0: its thread has yet to start */
		}
		if (active != NULL) {
			PyObject *id = PyLong_FromUnsignedLong(t->thread_id);
			int running = id ? PyDict_Contains(active, id) : -1;
			Py_XDECREF(id);
			PyErr_Clear();
			if (running != 1) {
				skipped = 1;
				continue;
			}
		}
		if (in_importlib(t, w->others_rounds <= 1)) { /* the first second: patient */
			skipped = 1;
			continue;
		}
		if (w->others_nhit == w->others_caphit) {
			size_t n = w->others_caphit ? 2 * w->others_caphit : 8;
			uint64_t *hit = realloc(w->others_hit, n * sizeof *hit);
			if (hit == NULL) {
				skipped = 1; /* not noted, not interrupted: at the next interrupt */
				continue;
			}
			w->others_hit = hit;
			w->others_caphit = n;
		}
		w->others_hit[w->others_nhit++] = ts_id;
		PyThreadState_SetAsyncExc(t->thread_id, PyExc_KeyboardInterrupt);
	}
	Py_XDECREF(active);
	w->others_owed = skipped; /* skipped ones: at the next interrupt */
	if (!fresh) {
		/* Waits are ended for a whole round only: a thread the round reached that caught its
		 * interrupt and waits again (a sleep in a retry loop) would get another one. One left out
		 * that waits now sees its interrupt when the wait ends, or at the next round. */
		return;
	}
	pthread_mutex_lock(&w->others_mu); /* and ends their waits: sleeps, queue waits */
	w->others_gen++;
	for (struct pyw_other_wait *o = w->others_waits; o != NULL; o = o->next) {
		pthread_mutex_lock(o->mu); /* lock order: others_mu, then a queue's */
		pthread_cond_broadcast(o->cv);
		pthread_mutex_unlock(o->mu);
	}
	pthread_mutex_unlock(&w->others_mu);
}

/* Whether stop_codec's request s (not 0) is for task: its own, or whatever runs. */
static inline int stop_for(uint64_t s, uint64_t task) { return s == task || s == PYW_ANY_TASK; }

/* Waits (GIL not held) while an interrupter that waits for the GIL has asked the codec to stop
 * (stop_codec): while it is an interrupter of task (or of whatever runs) if ours is set, else
 * while it is one of another task's. Its wait for the GIL ends within microseconds here. */
static void await_interrupter(pyw_interp *w, uint64_t task, int ours) {
	for (;;) {
		uint64_t s = atomic_load(&w->stop_codec);
		if (s == 0 || stop_for(s, task) != ours) {
			return;
		}
		struct timespec pause = {0, 20 * 1000};
		nanosleep(&pause, NULL);
	}
}

/* With the GIL held: lets the interrupter of task that waits for the GIL in, and waits until it
 * is done. */
static void let_interrupter_in(pyw_interp *w, uint64_t task) {
	Py_BEGIN_ALLOW_THREADS
	await_interrupter(w, task, 1);
	Py_END_ALLOW_THREADS
}

static void begin(pyw_interp *w, uint64_t task) {
	atomic_store(&w->busy_task, task); /* before the looks below: see pyw_interp_interrupt */
	/* An interrupter of the task before may still wait for the GIL (it came as that task ended):
	 * let it have the GIL first. This task may hold the GIL as long as a conversion of its own
	 * takes, which only its own interrupt stops, and interrupts take turns: that one would wait
	 * for this task's end, and this task's interrupter for that one, for good. A few
	 * microseconds: no one else holds the GIL, but for the interpreter's other threads. */
	await_interrupter(w, task, 0);
	PyEval_RestoreThread(w->tstate);
	if (w->out.cap > PYW_OUT_KEEP) {
		pyw_buf_free(&w->out);
	}
	pyw_refs_clear(&w->out_refs);
	w->current_task = task;
	w->codec_stops = 0;
	int early = 0;
	pthread_mutex_lock(&w->precancel_mu);
	for (int k = 0; task != 0 && k < PYW_PRECANCELS; k++) {
		if (w->precancel[k] == task) {
			w->precancel[k] = 0;
			early = 1;
			break;
		}
	}
	pthread_mutex_unlock(&w->precancel_mu);
	if (early) {
		/* interrupted before it began (the interrupter came first): interrupt it now */
		inject(w, task);
	}
}

/* Ends the task: no interrupt can be injected into it any more, and one that was injected but
 * not raised yet is withdrawn so it cannot hit the next task. Returns 1 if it was interrupted. */
static int end_task(pyw_interp *w, uint64_t task) {
	w->current_task = 0;
	w->held_task = 0;
	w->shielded = 0;
	atomic_store(&w->owed_task, 0);
	atomic_store(&w->batch_task, 0);
	flag_batch(w, 0);
	atomic_store(&w->interrupt_pending, 0);
	w->cancel_asked = 0;
	w->cancel_pending = 0;
	PyObject *coro = w->main_coro; /* bootstrap._run_async clears it itself; this is for certain */
	w->main_coro = NULL;
	int interrupted = task != 0 && w->interrupted_task == task;
	if (interrupted) {
		w->interrupted_task = 0;
		PyObject *pending = PyErr_GetRaisedException();
		withdraw(w);
		PyErr_SetRaisedException(pending);
	}
	Py_XDECREF(coro); /* once withdrawn: closing it runs Python code */
	return interrupted;
}

/* The task's outcome: value encoded, or the pending exception captured. The task ends only
 * after that: the Python code it runs (an exception's __str__ in the traceback, a finalizer of
 * the value, a dict key's repr) is the task's and is interrupted with it, or one that hangs would
 * keep the interpreter for good. */
static pyw_result finish_as(pyw_interp *w, uint64_t task, PyObject *value, int outcomes) {
	pyw_result r;
	if (value == NULL) {
		r = capture_error(&w->out, w->helpers);
	} else {
		w->stoppable = 1;
		r = encode_into(&w->out, &w->out_refs, value, outcomes);
		w->stoppable = 0;
		Py_DECREF(value);
	}
	int interrupted = end_task(w, task);
	/* an interrupt that stopped the codec (the arguments, or the result) interrupted the call */
	r.interrupted = interrupted || w->codec_stops != 0;
	atomic_store(&w->busy_task, 0);
	PyEval_SaveThread();
	return r;
}

static pyw_result finish(pyw_interp *w, uint64_t task, PyObject *value) { return finish_as(w, task, value, 0); }

/* pyw_decode of a call's arguments, which an interrupt may stop (pyw_codec_stop). */
static PyObject *decode_args(pyw_interp *w, const char **p, const char *end, pyw_shared *const *refs, size_t nrefs) {
	w->stoppable = 1;
	PyObject *o = pyw_decode(p, end, refs, nrefs);
	w->stoppable = 0;
	return o;
}

static PyObject *helper(pyw_interp *w, const char *name) {
	PyObject *f = PyDict_GetItemString(w->helpers, name); /* borrowed */
	if (f == NULL && !PyErr_Occurred()) {
		PyErr_Format(PyExc_SystemError, "pyworkers bootstrap helper %s is missing", name);
	}
	return f;
}

/* Starting an interpreter frees much of what it allocated (the compiler's memory, import
 * machinery's temporaries), and ending one frees all of its own; glibc keeps such memory in the
 * allocating thread's arena. Handing the free pages back at these two rare moments takes an idle
 * worker from 3.3 to 2.7 MiB of resident memory (BenchmarkIdleWorkerRSS). */
static void give_back_memory(void) {
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

pyw_interp *pyw_interp_new(uintptr_t handle, const char *setup, size_t setuplen, pyw_result *res,
                           pyw_buf *errbuf) {
	PyInterpreterConfig cfg = {
	    .use_main_obmalloc = 0,
	    .allow_fork = 0, /* a Go process must never fork a live CPython */
	    .allow_exec = 0,
	    .allow_threads = 1,
	    .allow_daemon_threads = 0, /* they would outlive Py_EndInterpreter */
	    .check_multi_interp_extensions = 1,
	    .gil = PyInterpreterConfig_OWN_GIL,
	};
	PyThreadState *ts = NULL;
	PyStatus st = Py_NewInterpreterFromConfig(&ts, &cfg);
	res->interrupted = 0;
	if (PyStatus_Exception(st)) {
		char msg[512];
		pyw_status_msg(st, "cannot create interpreter", msg, sizeof msg);
		errbuf->len = 0;
		pyw_buf_printf(errbuf, "%s", msg);
		res->status = PYW_FAILED;
		res->data = errbuf->data;
		res->len = errbuf->len;
		return NULL;
	}
	pyw_interp *w = calloc(1, sizeof *w);
	PyObject *mod = NULL, *code = NULL, *cfgobj = NULL, *r = NULL;
	if (w == NULL) {
		PyErr_NoMemory();
		goto fail;
	}
	w->tstate = ts;
	w->interp = PyThreadState_GetInterpreter(ts);
	w->thread_ident = PyThread_get_thread_ident();
	w->wake_fd = -1;
	pthread_mutex_init(&w->wait_mu, NULL);
	pthread_mutex_init(&w->others_mu, NULL);
	pthread_mutex_init(&w->precancel_mu, NULL);
	current = w;
	mod = PyImport_ImportModule("pyworkers");
	if (mod == NULL || pyw_module_set_handle(mod, handle, w) < 0) {
		goto fail;
	}
	w->helpers = PyDict_New();
	if (w->helpers == NULL || PyDict_SetItemString(w->helpers, "__builtins__", PyEval_GetBuiltins()) < 0) {
		goto fail;
	}
	r = PyUnicode_FromString("_pyworkers_boot");
	if (r == NULL || PyDict_SetItemString(w->helpers, "__name__", r) < 0) {
		goto fail;
	}
	Py_CLEAR(r);
	code = PyMarshal_ReadObjectFromString(pyw_boot_code, pyw_boot_len);
	if (code == NULL) {
		goto fail;
	}
	r = PyEval_EvalCode(code, w->helpers, w->helpers);
	if (r == NULL) {
		goto fail;
	}
	Py_CLEAR(r);
	const char *p = setup;
	cfgobj = pyw_decode(&p, setup + setuplen, NULL, 0);
	PyObject *fn = cfgobj ? helper(w, "setup") : NULL;
	r = fn ? PyObject_CallOneArg(fn, cfgobj) : NULL;
	if (r == NULL) {
		goto fail;
	}
	Py_DECREF(r);
	Py_DECREF(cfgobj);
	Py_DECREF(code);
	Py_DECREF(mod);
	PyEval_SaveThread();
	give_back_memory();
	res->status = PYW_OK;
	res->data = NULL;
	res->len = 0;
	return w;

fail:
	Py_XDECREF(r);
	*res = capture_error(errbuf, w ? w->helpers : NULL);
	Py_XDECREF(cfgobj);
	Py_XDECREF(code);
	Py_XDECREF(mod);
	if (w != NULL) {
		Py_CLEAR(w->helpers);
	}
	current = NULL;
	Py_EndInterpreter(ts); /* waits for threads (a .pth file's?) whose sleeps may use w */
	if (w != NULL) {
		pthread_mutex_destroy(&w->wait_mu);
		pthread_mutex_destroy(&w->others_mu);
		pthread_mutex_destroy(&w->precancel_mu);
		free(w->others_hit);
		free(w);
	}
	return NULL;
}

/* One step of the wind-down: mod.name() — looked up now (mod imported first with import set,
 * else the step is skipped while mod has not been imported; with mod NULL, the bootstrap helper
 * name), again when an interrupt injected meanwhile cut it short (it reached the other threads
 * too: what the step waits for may be over now); anything else it raised is reported as CPython
 * reports it. No Python code runs between the tries, so no interrupt can escape this loop. */
static void wind_down_step(pyw_interp *w, const char *mod, const char *name, int import, const char *what) {
	for (;;) {
		withdraw(w); /* an interrupt still pending from before is spent: it would end this at once */
		uint64_t before = w->injections;
		PyObject *fn = NULL;
		if (mod == NULL) {
			fn = Py_XNewRef(helper(w, name));
		} else {
			PyObject *m = NULL;
			if (import) {
				m = PyImport_ImportModule(mod);
			} else { /* on the own thread: waits for an import of it under way, as CPython's end does */
				PyObject *n = PyUnicode_FromString(mod);
				m = n ? PyImport_GetModule(n) : NULL;
				Py_XDECREF(n);
			}
			if (m == NULL && !PyErr_Occurred()) {
				return;
			}
			fn = m ? PyObject_GetAttrString(m, name) : NULL;
			Py_XDECREF(m);
		}
		PyObject *r = fn ? PyObject_CallNoArgs(fn) : NULL;
		Py_XDECREF(fn);
		if (r != NULL) {
			Py_DECREF(r);
			return;
		}
		if (w->injections != before && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
			PyErr_Clear();
			continue;
		}
		withdraw(w); /* or it would hit the report */
		PyErr_FormatUnraisable("Exception ignored %s", what);
		return;
	}
}

/* threading's exit hooks (threading._threading_atexits): with clear set, spent (Py_EndInterpreter
 * would run them again: a second threading._shutdown returns early only in the main
 * interpreter); whether there are any. */
static int threading_hooks(int clear) {
	PyObject *threading = imported("threading");
	PyObject *hooks = threading ? PyObject_GetAttrString(threading, "_threading_atexits") : NULL;
	int any = hooks != NULL && PyList_Check(hooks) && PyList_GET_SIZE(hooks) > 0;
	if (any && clear) {
		PyList_SetSlice(hooks, 0, PyList_GET_SIZE(hooks), NULL);
	}
	Py_XDECREF(hooks);
	Py_XDECREF(threading);
	PyErr_Clear(); /* threading's internals as 3.14 has them, or nothing to do */
	return any;
}

/* Whether atexit functions are registered. */
static int atexit_functions(void) {
	PyObject *m = PyImport_ImportModule("atexit");
	PyObject *r = m ? PyObject_CallMethod(m, "_ncallbacks", NULL) : NULL;
	long n = r ? PyLong_AsLong(r) : 0;
	Py_XDECREF(r);
	Py_XDECREF(m);
	PyErr_Clear();
	return n > 0;
}

/* Lets go of the targets Resolve found (their functions hold their modules' globals): the
 * interpreter takes no more calls once it winds down. */
static void drop_targets(pyw_interp *w) {
	for (size_t i = 0; i < w->nslots; i++) {
		Py_CLEAR(w->slots[i]);
	}
}

pyw_result pyw_interp_wind_down(pyw_interp *w, uint64_t task) {
	OWN_THREAD_ONLY(w);
	begin(w, task);
	w->winding_down = 1;
	/* As Py_EndInterpreter: threading's exit hooks and the wait for its threads that are not
	 * daemons (if threading was imported), then the atexit functions; then the wait once more,
	 * for threads those started (CPython refuses them by then). Once no code of the program's
	 * runs, what it holds is let go of (bootstrap.release: the finalizers that runs,
	 * Py_EndInterpreter would run where no interrupt reaches them), and the wait again, for
	 * threads those finalizers started. Again while threads or atexit functions registered more
	 * (the first weakref.finalize, an atexit function's import of threading):
	 * Py_EndInterpreter must find as little as it can left to run or wait for, as it holds a
	 * lifecycle turn and cannot be interrupted. A few rounds at most, for code that registers
	 * anew each time. */
	for (int round = 0; round < 4; round++) {
		wind_down_step(w, "threading", "_shutdown", 0, "on threading shutdown");
		threading_hooks(1);
		wind_down_step(w, "_thread", "_shutdown", 1, "while joining threads");
		wind_down_step(w, "atexit", "_run_exitfuncs", 1, "in atexit");
		wind_down_step(w, "_thread", "_shutdown", 1, "while joining threads");
		drop_targets(w);
		wind_down_step(w, NULL, "release", 0, "while letting go of the program's objects");
		wind_down_step(w, "_thread", "_shutdown", 1, "while joining threads");
		withdraw(w);
		if (!threading_hooks(0) && !atexit_functions()) {
			break;
		}
	}
	w->winding_down = 0;
	return finish(w, task, Py_NewRef(Py_None));
}

void pyw_interp_end(pyw_interp *w) {
	PyEval_RestoreThread(w->tstate);
	for (size_t i = 0; i < w->nslots; i++) {
		Py_XDECREF(w->slots[i]);
	}
	free(w->slots);
	Py_CLEAR(w->helpers);
	Py_CLEAR(w->main_coro);
	Py_EndInterpreter(w->tstate); /* leaves no thread state current */
	current = NULL;
	pyw_buf_free(&w->out);
	pyw_refs_free(&w->out_refs);
	pthread_mutex_destroy(&w->wait_mu);
	pthread_mutex_destroy(&w->others_mu);
	pthread_mutex_destroy(&w->precancel_mu);
	free(w->others_hit);
	free(w);
	give_back_memory();
}

pyw_result pyw_interp_run(pyw_interp *w, int mode, const char *src, size_t len, const char *name,
                          uint64_t task) {
	OWN_THREAD_ONLY(w);
	begin(w, task);
	PyObject *fn = helper(w, "run");
	PyObject *s = fn ? PyUnicode_DecodeUTF8(src, (Py_ssize_t)len, "strict") : NULL;
	PyObject *r = NULL;
	if (s != NULL) {
		r = PyObject_CallFunction(fn, "Ois", s, mode, name);
		Py_DECREF(s);
	}
	return finish(w, task, r);
}

pyw_result pyw_interp_resolve(pyw_interp *w, const char *target, size_t len, size_t slot, uint64_t task) {
	OWN_THREAD_ONLY(w);
	begin(w, task);
	PyObject *r = NULL;
	if (slot >= w->nslots) {
		size_t n = w->nslots ? w->nslots * 2 : 16;
		while (n <= slot) {
			n *= 2;
		}
		PyObject **s = realloc(w->slots, n * sizeof *s);
		if (s == NULL) {
			PyErr_NoMemory();
			return finish(w, task, NULL);
		}
		memset(s + w->nslots, 0, (n - w->nslots) * sizeof *s);
		w->slots = s;
		w->nslots = n;
	}
	PyObject *fn = helper(w, "resolve");
	PyObject *t = fn ? PyUnicode_DecodeUTF8(target, (Py_ssize_t)len, "strict") : NULL;
	if (t != NULL) {
		r = PyObject_CallOneArg(fn, t);
		Py_DECREF(t);
	}
	if (r != NULL) {
		Py_XSETREF(w->slots[slot], r);
		r = Py_NewRef(Py_None);
	}
	return finish(w, task, r);
}

/* The callable in slot, borrowed; NULL with SystemError if the slot was never resolved. */
static PyObject *resolved(pyw_interp *w, size_t slot) {
	if (slot >= w->nslots || w->slots[slot] == NULL) {
		PyErr_SetString(PyExc_SystemError, "pyworkers: call of an unresolved target");
		return NULL;
	}
	return w->slots[slot];
}

pyw_result pyw_interp_call(pyw_interp *w, size_t slot, const char *args, size_t len, pyw_shared *const *refs,
                           size_t nrefs, uint64_t task) {
	OWN_THREAD_ONLY(w);
	begin(w, task);
	const char *p = args, *end = args + len;
	PyObject *a = NULL, *kw = NULL, *r = NULL;
	PyObject *target = resolved(w, slot);
	if (target == NULL) {
		return finish(w, task, NULL);
	}
	a = decode_args(w, &p, end, refs, nrefs);
	kw = a ? decode_args(w, &p, end, refs, nrefs) : NULL;
	if (kw != NULL && (!PyTuple_Check(a) || (kw != Py_None && !PyDict_Check(kw)))) {
		PyErr_SetString(PyExc_SystemError, "pyworkers: malformed call arguments");
	} else if (kw != NULL) {
		r = PyObject_Call(target, a, kw == Py_None ? NULL : kw);
	}
	Py_XDECREF(a);
	Py_XDECREF(kw);
	return finish(w, task, r);
}

pyw_result pyw_interp_call_many(pyw_interp *w, size_t slot, const char *items, size_t len,
                                pyw_shared *const *refs, size_t nrefs, uint64_t task) {
	OWN_THREAD_ONLY(w);
	atomic_store(&w->batch_task, task); /* before begin: it may inject at once */
	begin(w, task);
	PyObject *target = resolved(w, slot);
	if (target == NULL) {
		return finish(w, task, NULL);
	}
	PyObject *fn = helper(w, "call_many"), *r = NULL;
	const char *p = items;
	PyObject *list = fn ? decode_args(w, &p, items + len, refs, nrefs) : NULL;
	int started = list != NULL;
	if (list != NULL) {
		r = PyObject_CallFunctionObjArgs(fn, target, list, NULL);
		Py_DECREF(list);
	}
	pyw_result res = finish_as(w, task, r, 1);
	res.started = started;
	return res;
}

/* Whether the coroutine is running now on w's thread (GIL held by the caller, so that thread is
 * stopped outside Python code): one of its frames is on the thread's stack. */
static int running(pyw_interp *w, PyObject *coro) {
	PyFrameObject *f = PyThreadState_GetFrame(w->tstate);
	while (f != NULL) {
		PyObject *gen = PyFrame_GetGenerator(f);
		int found = gen == coro;
		Py_XDECREF(gen);
		if (found) {
			Py_DECREF(f);
			return 1;
		}
		PyFrameObject *back = PyFrame_GetBack(f);
		Py_DECREF(f);
		f = back;
	}
	return 0;
}

/* Whether an interrupt of task should ask the event loop to cancel the async call's task rather
 * than inject KeyboardInterrupt (GIL held): the first interrupt of an async call that finds the
 * loop waiting for events or running other tasks' code. Injected there, KeyboardInterrupt would
 * land in asyncio's own code or kill another task; the loop, woken by the byte on its socket,
 * cancels the call's task at its next turn instead, as asyncio.Runner does for a first Ctrl-C.
 * An interrupt that finds the call's own code running is injected there (the task ends with
 * it), and so is a second one, or an escalation: the loop may be blocked by code that does not
 * await, or the task deaf to cancellation. */
static int cancel_instead(pyw_interp *w) {
	if (w->main_coro == NULL || w->wake_fd < 0 || w->cancel_asked) {
		return 0;
	}
	int r = running(w, w->main_coro);
	PyErr_Clear(); /* a frame object that could not be made: not found, then */
	return !r;
}

int pyw_interp_interrupt(pyw_interp *w, uint64_t task, int escalate) {
	int again = escalate & (PYW_INTERRUPT_AGAIN | PYW_INTERRUPT_OWED), late = escalate & PYW_INTERRUPT_LATE;
	int owed = escalate & PYW_INTERRUPT_OWED;
	escalate &= 1;
	if (owed && atomic_load(&w->owed_task) != task) {
		return 0; /* taken back meanwhile: not even a stop of the codec */
	}
	if (task != 0) {
		if (!escalate && !again) { /* if it has yet to begin, begin() interrupts it */
			pthread_mutex_lock(&w->precancel_mu);
			int known = 0;
			for (int k = 0; k < PYW_PRECANCELS; k++) {
				known |= w->precancel[k] == task; /* interrupted again (every 100 ms) */
			}
			if (!known) {
				w->precancel[w->precancel_next++ % PYW_PRECANCELS] = task;
			}
			pthread_mutex_unlock(&w->precancel_mu);
		}
	}
	/* The worker may be in the codec, which holds the GIL and runs no Python code, as long as a
	 * value takes: it polls this and stops (pyw_codec_stop). */
	uint64_t req = task != 0 ? task : PYW_ANY_TASK;
	atomic_store(&w->stop_codec, req);
	/* Not running (yet, or any more: a late interrupt of a task that has ended): nothing to wait
	 * for the GIL for. The next task may hold it for long (converting a value that only an
	 * interrupt of its own stops), and interrupts take turns (imu): waiting, this one would
	 * keep that task's own out. Either begin() found the precancel entry above, or it set
	 * busy_task before it looked, and this sees it. Once past this, begin() of the next task
	 * waits for this one to end (it sees stop_codec). */
	if (task != 0 && atomic_load(&w->busy_task) != task) {
		atomic_compare_exchange_strong(&w->stop_codec, &req, 0);
		return 0;
	}
	PyThreadState *ts = PyThreadState_New(w->interp);
	if (ts == NULL) {
		/* no thread state to take the GIL with (out of memory): tried again shortly, as a
		 * deferred one is, rather than lost */
		atomic_compare_exchange_strong(&w->stop_codec, &req, 0);
		return PYW_DEFERRED;
	}
	PyEval_RestoreThread(ts); /* waits for the worker to drop its GIL: at most a switch interval */
	int done = 0;
	uint64_t cur = w->current_task;
	if (owed && atomic_load(&w->owed_task) != cur) {
		cur = 0; /* injected meanwhile by another interrupter: not twice */
	}
	if (cur != 0 && (task == 0 || cur == task) && (cur != w->held_task || ++w->held_skips > PYW_HOLD_MAX)) {
		if (!escalate && cancel_instead(w)) {
			atomic_store(&w->owed_task, 0); /* this cancellation is the owed interrupt */
			w->interrupted_task = cur;
			w->cancel_asked = 1;
			w->cancel_pending = 1;
			done = PYW_CANCEL_ASKED;
		} else if (!escalate || w->cancel_pending) {
			/* an escalation injects only while its request is still pending: not taken by the
			 * loop, and the call still on it (see pyw_set_main_coro); after an injection the
			 * loop must not cancel the task again for it */
			if ((w->shielded && !late) || in_importlib(w->tstate, !late)) {
				done = PYW_DEFERRED; /* the caller tries again soon */
			} else {
				w->cancel_pending = 0;
				atomic_store(&w->owed_task, 0);
				inject(w, cur);
				done = PYW_INJECTED;
			}
			if (w->winding_down && (others_due(w) || w->others_owed)) {
				inject_others(w, ts);
			}
		}
	}
	if ((done == PYW_INJECTED || done == PYW_CANCEL_ASKED) && w->wake_fd >= 0) {
		/* An interpreter that has run async targets: its event loop may be waiting in select,
		 * where the interrupt would not be seen; a byte on its wake socket ends the wait
		 * (bootstrap._new_loop). Under the GIL, so that the socket cannot close meanwhile. */
		char b = 0;
		(void)send(w->wake_fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	PyThreadState_Clear(ts);
	PyThreadState_DeleteCurrent();
	atomic_compare_exchange_strong(&w->stop_codec, &req, 0); /* unless another interrupt's is there */
	if (done == PYW_INJECTED) {
		/* wake the task if it is blocked in one of our waits (it holds no GIL then) */
		pthread_mutex_lock(&w->wait_mu);
		if (w->wait_on_mu != NULL) {
			pthread_mutex_lock(w->wait_on_mu);
			pthread_cond_broadcast(w->wait_on_cv);
			pthread_mutex_unlock(w->wait_on_mu);
		}
		pthread_mutex_unlock(&w->wait_mu);
	}
	return done;
}

/* The queue wait of one of an interpreter's other threads: the interpreter, and its interrupts
 * of other threads so far, as pyw_wait_prepare saw them; the registration (pyw_wait_begin). */
static _Thread_local pyw_interp *other;
static _Thread_local uint64_t other_gen;
static _Thread_local struct pyw_other_wait other_wait;
static _Thread_local int other_registered;

void pyw_wait_begin(pthread_mutex_t *mu, pthread_cond_t *cv) {
	pyw_interp *w = current;
	if (w == NULL) {
		if (other != NULL && !other_registered) {
			other_wait.mu = mu;
			other_wait.cv = cv;
			pthread_mutex_lock(&other->others_mu);
			other_wait.next = other->others_waits;
			other->others_waits = &other_wait;
			pthread_mutex_unlock(&other->others_mu);
			other_registered = 1;
		}
		return;
	}
	pthread_mutex_lock(&w->wait_mu);
	w->wait_on_mu = mu;
	w->wait_on_cv = cv;
	pthread_mutex_unlock(&w->wait_mu);
}

void pyw_wait_prepare(pyw_interp *mod) {
	pyw_interp *w = current;
	if (w == NULL) {
		other = mod;
		other_gen = other != NULL ? atomic_load(&other->others_gen) : 0;
		return;
	}
	/* inject sets both under the GIL; the eval loop clears async_exc when it raises it. Not
	 * when the task's code runs an interpreter of its own on this thread (concurrent.
	 * interpreters): the thread state is that one's, and the interrupt, still pending in the
	 * task's, must end this wait as well. */
	PyThreadState *ts = PyThreadState_Get();
	if (atomic_load(&w->interrupt_pending) && ts->async_exc == NULL && PyThreadState_GetInterpreter(ts) == w->interp) {
		atomic_store(&w->interrupt_pending, 0);
	}
}

/* The interpreter whose own thread this is, while its own code runs: not an interpreter that
 * code runs on this thread (concurrent.interpreters), whose objects, sockets and thread states
 * the worker's state must never name (its pyworkers module's private functions change nothing
 * then). GIL held. */
static pyw_interp *own(void) {
	pyw_interp *w = current;
	return w != NULL && PyInterpreterState_Get() == w->interp ? w : NULL;
}

int pyw_on_own_thread(pyw_interp *w) { return w != NULL && own() == w; }

void pyw_admit_interrupter(void) {
	pyw_interp *w = current;
	if (w == NULL || atomic_load_explicit(&w->stop_codec, memory_order_relaxed) == 0 || own() != w) {
		return;
	}
	uint64_t busy = atomic_load(&w->busy_task);
	if (busy != 0 && stop_for(atomic_load(&w->stop_codec), busy)) {
		let_interrupter_in(w, busy);
	}
}

void pyw_set_wake_fd(int fd) {
	pyw_interp *w = own();
	if (w != NULL) {
		w->wake_fd = fd;
	}
}

void pyw_set_shielded(int on) {
	pyw_interp *w = own();
	if (w != NULL) {
		w->shielded = on;
	}
}

void pyw_set_main_coro(PyObject *coro) {
	pyw_interp *w = own();
	if (w == NULL) {
		return;
	}
	Py_XSETREF(w->main_coro, coro == Py_None ? NULL : Py_XNewRef(coro));
	if (w->main_coro == NULL) {
		w->cancel_pending = 0; /* the call is over: a request it did not take is void */
	}
}

int pyw_take_cancel(void) {
	pyw_interp *w = own();
	if (w == NULL || !w->cancel_pending) {
		return 0;
	}
	w->cancel_pending = 0;
	return 1;
}

int pyw_codec_stop(void) {
	pyw_interp *w = current;
	uint64_t busy = w != NULL ? atomic_load_explicit(&w->busy_task, memory_order_relaxed) : 0;
	if (busy == 0 || !w->stoppable) {
		return 0;
	}
	uint64_t req = atomic_load_explicit(&w->stop_codec, memory_order_relaxed);
	if (req == 0 || !stop_for(req, busy)) {
		return 0;
	}
	w->codec_stops++;
	return 1;
}

pyw_stoppable pyw_stoppable_begin(void) {
	pyw_interp *w = current;
	pyw_stoppable s = {-1, 0, 0};
	if (w != NULL) {
		s.prev = w->stoppable;
		s.stops = w->codec_stops;
		s.injections = w->injections;
		w->stoppable = 1;
	}
	return s;
}

int pyw_stoppable_end(pyw_stoppable s, int stopped) {
	pyw_interp *w = current;
	if (w == NULL || s.prev < 0) {
		return PYW_STOP_NONE;
	}
	w->stoppable = s.prev;
	if (!stopped) {
		return PYW_STOP_NONE;
	}
	/* The interrupter waits for the GIL to inject its KeyboardInterrupt: let it, and wait until
	 * it is done (it clears stop_codec last), so that the task gets one interrupt, not this
	 * one and then the injected one in the code that handles it. As begin() waits. */
	PyErr_Clear();
	let_interrupter_in(w, atomic_load(&w->busy_task));
	if (w->injections == s.injections) {
		/* it asked for a cancellation, or was held off: no interrupt here, and the stop does
		 * not mark the call interrupted (finish_as) */
		w->codec_stops = s.stops;
		return PYW_STOP_AGAIN;
	}
	pyw_raise_interrupt(); /* takes back the injected one, raises it here */
	return PYW_STOP_RAISED;
}

int pyw_hold_if_interrupted(void) {
	pyw_interp *w = own();
	if (w == NULL || !pyw_task_interrupted()) {
		return 0;
	}
	if (w->held_task != w->current_task) {
		w->held_task = w->current_task;
		w->held_skips = 0;
	}
	withdraw(w);
	return 1;
}

int pyw_reinterrupt(void) {
	/* Not while the interpreter winds down: an atexit function's interrupt would end every one
	 * after it too (printed as ignored instead, as CPython does). */
	pyw_interp *w = own();
	if (w == NULL || !pyw_task_interrupted() || w->winding_down) {
		return 0;
	}
	if (w->shielded || in_importlib(PyThreadState_Get(), 1)) {
		/* the finalizer ran in shielded code, or in code importlib called: not here, where it
		 * would be raised in importlib (see in_importlib); the interrupter's watch injects it
		 * (pyw_interp_owed) */
		atomic_store(&w->owed_task, w->current_task);
		return 1;
	}
	inject(w, w->current_task);
	return 1;
}

int pyw_owe_interrupt(int on) {
	pyw_interp *w = own();
	if (w == NULL || !pyw_task_interrupted()) {
		return 0;
	}
	uint64_t none = 0, task = w->current_task;
	if (on) {
		return atomic_compare_exchange_strong(&w->owed_task, &none, task);
	}
	atomic_compare_exchange_strong(&w->owed_task, &task, 0);
	return 0;
}

int pyw_interp_owed(pyw_interp *w, uint64_t task) {
	if (atomic_load(&w->busy_task) != task) {
		return 0;
	}
	return atomic_load(&w->owed_task) == task ? 2 : 1;
}

int pyw_task_interrupted(void) {
	pyw_interp *w = current;
	return w != NULL && w->current_task != 0 && w->interrupted_task == w->current_task;
}

int pyw_interrupt_pending(pyw_interp *mod) {
	if (current == NULL) { /* another thread: its KeyboardInterrupt from the wind-down, if any */
		return PyThreadState_Get()->async_exc == PyExc_KeyboardInterrupt && mod != NULL && mod->winding_down;
	}
	return pyw_wait_interrupted() && PyThreadState_Get()->async_exc != NULL;
}

int pyw_wait_interrupted(void) {
	pyw_interp *w = current;
	if (w == NULL) {
		return other != NULL && atomic_load(&other->others_gen) != other_gen;
	}
	return atomic_load(&w->interrupt_pending);
}

void pyw_wait_end(void) {
	pyw_interp *w = current;
	if (w == NULL) {
		if (other_registered) {
			pthread_mutex_lock(&other->others_mu);
			struct pyw_other_wait **p = &other->others_waits;
			while (*p != &other_wait) {
				p = &(*p)->next;
			}
			*p = other_wait.next;
			pthread_mutex_unlock(&other->others_mu);
			other_registered = 0;
		}
		return; /* other stays: a Go writer may wait again before the call returns */
	}
	pthread_mutex_lock(&w->wait_mu);
	w->wait_on_mu = NULL;
	w->wait_on_cv = NULL;
	pthread_mutex_unlock(&w->wait_mu);
}

PyObject *pyw_raise_interrupt(void) {
	pyw_interp *w = current;
	if (w != NULL) {
		withdraw(w); /* raised once; code that catches it may go on */
	} else {
		PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL); /* the wind-down's, likewise */
	}
	PyErr_SetNone(PyExc_KeyboardInterrupt);
	return NULL;
}
