/*
 * pyw.h — the C shims behind package cpython. Every function here is called from Go through cgo
 * and does its whole job in that one call: attach the interpreter's thread state, work, detach.
 * C never keeps a Go pointer; Go finds its objects again through runtime/cgo.Handle values.
 *
 * Thread rules (enforced by the Go side, assumed here):
 *   - pyw_runtime_init and pyw_runtime_finalize run on the runtime's own locked OS thread;
 *   - pyw_interp_new, pyw_interp_end and all pyw_interp_* calls run on that interpreter's own
 *     locked OS thread, with no thread state attached on entry;
 *   - pyw_interp_interrupt is the one call made from another thread that takes the GIL; it makes
 *     a temporary thread state of its own and is serialised against pyw_interp_end by the Go
 *     side (its imu), as pyw_interp_owed is, which reads atomics only, without the GIL.
 */
#ifndef PYW_H
#define PYW_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <time.h>

#include "pyw_wire.h"

/* Status of a call into an interpreter (pyw_result.status). */
#define PYW_OK 0          /* data: the encoded result */
#define PYW_PYERR 1       /* data: encoded (type, message, traceback) of the Python exception */
#define PYW_CONVERT 3     /* data: encoded (path, message): the result has no wire encoding */
#define PYW_FAILED 4      /* data: UTF-8 text (none: out of memory): a failure of pyworkers itself */
#define PYW_WRONG_THREAD 5 /* called on a thread that is not the interpreter's own: nothing ran */

/* A shared buffer: interpreter-neutral memory with an atomic reference count. It crosses
 * interpreters (and Go) by reference, so large payloads move without a copy. */
typedef struct pyw_shared {
	_Atomic long refs;
	size_t len;
	char *data; /* len bytes, zeroed at creation, 64-byte aligned */
} pyw_shared;

pyw_shared *pyw_shared_new(size_t len); /* refs = 1; NULL when out of memory */
void pyw_shared_incref(pyw_shared *s);
void pyw_shared_decref(pyw_shared *s);

/* The shared buffers an encoded value refers to ('B' tags hold indexes into it); each entry
 * holds one reference. */
typedef struct {
	pyw_shared **v;
	size_t n, cap;
} pyw_refs;

long pyw_refs_add(pyw_refs *r, pyw_shared *s); /* increfs s; returns its index or -1 */
void pyw_refs_clear(pyw_refs *r);             /* decrefs all, keeps the array */
void pyw_refs_free(pyw_refs *r);

/* A growable byte buffer owned by C (malloc). */
typedef struct {
	char *data;
	size_t len, cap;
} pyw_buf;

int pyw_buf_reserve(pyw_buf *b, size_t extra);
/* Appends printf-formatted text (nothing when out of memory). */
void pyw_buf_printf(pyw_buf *b, const char *fmt, ...);
void pyw_buf_free(pyw_buf *b);

typedef struct {
	int status;
	const char *data; /* points into the interpreter's output buffer: valid until its next call */
	size_t len;
	int interrupted; /* an interrupt was injected into this call (whatever its outcome) */
	pyw_shared *const *refs; /* the shared buffers data refers to, valid as long as data */
	size_t nrefs;
	int started; /* call_many: its calls began (some may have run, whatever the outcome) */
	/* The interpreter's table that holds refs: whoever decodes data lets go of them
	 * (pyw_refs_clear; no GIL needed) once it holds references of its own, so that a buffer
	 * the caller releases is not kept until the interpreter's next call. */
	pyw_refs *held;
} pyw_result;

/* A queue wait of one of an interpreter's other threads, registered for the interrupts of its
 * wind-down (pyw_wait_begin). */
struct pyw_other_wait {
	pthread_mutex_t *mu;
	pthread_cond_t *cv;
	struct pyw_other_wait *next;
};

/* One own-GIL interpreter, owned by its Go *Interpreter. */

#define PYW_PRECANCELS 4

typedef struct pyw_interp {
	PyThreadState *tstate;
	PyInterpreterState *interp;
	unsigned long thread_ident; /* the OS thread that created (and owns) tstate */
	uint64_t current_task;      /* task running now, 0 when idle; changed only with the GIL held */
	uint64_t interrupted_task;  /* task an interrupt was injected into; changed with the GIL held */
	PyObject *helpers;          /* the bootstrap module's namespace (dict) */
	/* The batch (pyw_interp_call_many) running, 0 when none: an interrupt injected into it sets
	 * bootstrap's _batch_interrupted, which call_many reads after every item (a global: a few
	 * ns, where a call of _pyworkers._interrupted cost tiny calls 14 % of their rate), so that
	 * an item that caught the interrupt and returned does not let the batch run to its end.
	 * Atomic: set before begin() takes the GIL (it may inject at once). batch_flagged:
	 * _batch_interrupted is True. */
	_Atomic uint64_t batch_task;
	int batch_flagged;
	PyObject **slots;           /* resolved call targets, indexed by the Go side */
	size_t nslots;
	pyw_buf out;
	pyw_refs out_refs; /* shared buffers the last result refers to */
	/* Blocking waits (pyw_wait_*) of the interpreter's own thread register here, so that an
	 * interrupt can wake them at once instead of when they time out. */
	pthread_mutex_t wait_mu;
	pthread_mutex_t *wait_on_mu;
	pthread_cond_t *wait_on_cv;
	_Atomic int interrupt_pending; /* set with the injected interrupt, cleared when the task ends */
	/* Tasks interrupted when they were not running, the last PYW_PRECANCELS different ones:
	 * begin() interrupts one that had yet to begin. Late interrupts of tasks that have ended land
	 * here too: a few entries, so that one of those hardly ever pushes out a task still to begin.
	 * Under precancel_mu, not the GIL: such an interrupt must not wait for it (see
	 * pyw_interp_interrupt). */
	pthread_mutex_t precancel_mu;
	uint64_t precancel[PYW_PRECANCELS];
	unsigned precancel_next;
	int wake_fd; /* an interrupt writes a byte here to wake the bootstrap's event loop; -1: none;
	              * set (pyworkers._set_wake_fd) and read with the GIL held */
	/* An async target's call (bootstrap._run_async): the coroutine it runs on the loop; whether
	 * an interrupt of the running task asked the loop to cancel it instead (see
	 * pyw_interp_interrupt), and whether the loop has yet to take that request. Reset when the
	 * task ends; all changed with the GIL held. */
	PyObject *main_coro;
	int cancel_asked;
	int cancel_pending;
	/* The task that is ending on its interrupt (bootstrap.call_many keeping its outcomes):
	 * further interrupts of it are not injected, up to PYW_HOLD_MAX of them (set-up code that
	 * hangs must not hold Close for good); cleared when the task ends. With the GIL held. */
	uint64_t held_task;
	int held_skips;
	/* Bootstrap code that must not be cut short runs (pyworkers._shield: building the event
	 * loop, which an interrupt would leave half made): interrupts are deferred, as in importlib
	 * (see in_importlib), for up to a second. Cleared when the task ends; with the GIL held. */
	int shielded;
	/* The codec's stop (pyw_codec_stop): the task whose call is being served, from begin to the
	 * end of its result's encoding, and whether the conversion running now may be stopped
	 * (its arguments, its result, a channel's value: pyw_stoppable_begin), both on the
	 * interpreter's own thread only; the task an interrupter waiting for the GIL wants stopped
	 * (PYW_ANY_TASK: whatever runs), set before it waits and cleared after; and how often the
	 * codec stopped for it during this call. busy_task is written on the interpreter's own
	 * thread and read by interrupters, which wait for the GIL only for the task it names. */
	_Atomic uint64_t busy_task;
	int stoppable;
	_Atomic uint64_t stop_codec;
	unsigned codec_stops;
	/* pyw_interp_wind_down runs: an interrupt reaches the interpreter's other threads too; and
	 * how many interrupts were injected into its own thread so far. With the GIL held. */
	int winding_down;
	uint64_t injections;
	int64_t others_at; /* when the other threads' last round of interrupts began (pyw_monotonic_ns), 0: never */
	uint64_t *others_hit; /* the thread states that round interrupted (PyThreadState_GetID; malloc'd) */
	size_t others_nhit, others_caphit;
	int others_owed; /* it left threads out, to be interrupted at the next interrupt */
	unsigned others_rounds; /* rounds so far */
	/* The task whose interrupt, swallowed by a finalizer that importlib called, is to be injected
	 * again by the interrupter (pyw_interp_owed): not by pyw_reinterrupt, in importlib. */
	_Atomic uint64_t owed_task;
	/* Those threads' waits (sleeps, queue waits: pyw_wait_begin) end when such an interrupt
	 * comes: others_gen counts them (changed under others_mu, with every registered wait's cv
	 * broadcast; read without it by waits checking for one). */
	pthread_mutex_t others_mu;
	_Atomic uint64_t others_gen;
	struct pyw_other_wait *others_waits; /* under others_mu */
} pyw_interp;

#define PYW_ANY_TASK UINT64_MAX
#define PYW_HOLD_MAX 20

/* ---- runtime (runtime.c) */
/* Starts CPython and compiles boot, the bootstrap's source. On failure returns NULL and writes a
 * message to err. */
PyThreadState *pyw_runtime_init(const char *home, const char *executable, const char *boot, char *err, size_t errlen);
/* Writes what a failed PyStatus says (otherwise when it says nothing) to err. */
void pyw_status_msg(PyStatus st, const char *otherwise, char *err, size_t errlen);
/* Reads runtime facts (main interpreter, on the runtime thread). */
void pyw_runtime_info(PyThreadState *main, char *version, size_t vlen, char *prefix, size_t plen, int *debug);
int pyw_runtime_finalize(PyThreadState *main);
/* The file the linked libpython was loaded from (dladdr; the executable itself when it is linked
 * in statically). -1 if unknown. Callable before the runtime starts. */
int pyw_libpython_path(char *buf, size_t n);
/* The bootstrap (bootstrap.py), compiled once by pyw_runtime_init and kept marshalled: every
 * interpreter loads its own code objects from these bytes. */
extern const char *pyw_boot_code;
extern Py_ssize_t pyw_boot_len;

/* ---- interpreters (interp.c) */
/* Creates an own-GIL interpreter on the calling thread and runs the bootstrap in it with setup
 * (an encoded dict). On failure returns NULL and sets *res (data in *errbuf, which the caller
 * frees with pyw_buf_free). */
pyw_interp *pyw_interp_new(uintptr_t handle, const char *setup, size_t setuplen, pyw_result *res,
                           pyw_buf *errbuf);
/* What ending the interpreter waits for, as task (interruptible, see pyw_interp_interrupt):
 * threading's exit hooks and its threads that are not daemons, then the atexit functions, then
 * the threads those started; again while more were registered meanwhile. For before
 * pyw_interp_end, whose Py_EndInterpreter then finds nothing of it left to run or wait for. */
pyw_result pyw_interp_wind_down(pyw_interp *w, uint64_t task);
/* Ends the interpreter (Py_EndInterpreter). */
void pyw_interp_end(pyw_interp *w);
/* Runs source: mode 0 = exec in __main__, 1 = eval in __main__ (result encoded). */
pyw_result pyw_interp_run(pyw_interp *w, int mode, const char *src, size_t len, const char *name,
                          uint64_t task);
/* Resolves target ("pkg.mod:func", "path/file.py:func") into slot, as task (interruptible: an
 * import can hang). */
pyw_result pyw_interp_resolve(pyw_interp *w, const char *target, size_t len, size_t slot, uint64_t task);
/* Calls slot with args: an encoded tuple followed by an encoded dict of keywords or None, whose
 * 'B' tags index refs. */
pyw_result pyw_interp_call(pyw_interp *w, size_t slot, const char *args, size_t len, pyw_shared *const *refs,
                           size_t nrefs, uint64_t task);
/* Calls slot once per item of items (an encoded list of (args tuple, kwargs dict or None)); the
 * result is a flat list: for each item in turn, True and the value, or False and (type,
 * message, traceback). */
pyw_result pyw_interp_call_many(pyw_interp *w, size_t slot, const char *items, size_t len,
                                pyw_shared *const *refs, size_t nrefs, uint64_t task);
/* From any other thread: interrupts task (0: whatever runs) if (and only if) it is still the
 * running one. Returns PYW_INJECTED for KeyboardInterrupt injected, PYW_CANCEL_ASKED when the
 * task is an async call's whose event loop was asked to cancel it instead (the caller then
 * escalates, below, if the loop has not taken the request soon), PYW_DEFERRED when the task
 * runs the import system's own code, where an interrupt would leave its locks taken (the caller
 * tries again shortly, until it injects or the task ends; for a second also while it runs code
 * importlib calls: see interp.c's in_importlib) or no thread state could be made to take the
 * GIL with, 0 when it did nothing. With escalate 1, it
 * only injects KeyboardInterrupt into a task whose cancel request the loop has not taken yet;
 * with PYW_INTERRUPT_AGAIN or'd in, it is a deferred one's next try (it does not note the task
 * as interrupted before it began: it had begun), and with PYW_INTERRUPT_LATE too, one that has
 * waited a second (only importlib's own code defers it then, not what that calls: see interp.c's
 * in_importlib). While the interpreter winds down (pyw_interp_wind_down) the injection reaches
 * its other threads too: all of them
 * the first time, then once a second at most, and in between those a round left out (running
 * importlib's code, or being started). For a task that is running it blocks until it can take
 * the interpreter's GIL; one that is not (yet, or any more) it notes (precancel) and returns 0
 * at once, so that the next task's own interrupt is not kept waiting. */
enum { PYW_INJECTED = 1, PYW_CANCEL_ASKED = 2, PYW_DEFERRED = 3 };
#define PYW_INTERRUPT_AGAIN 2
#define PYW_INTERRUPT_LATE 4
#define PYW_INTERRUPT_OWED 8 /* with AGAIN's meaning: only if the task still owes one (pyw_interp_owed) */
int pyw_interp_interrupt(pyw_interp *w, uint64_t task, int escalate);
/* From any other thread, without the GIL, after an interrupt of task was injected: 0 once task
 * is no longer running, 2 while it runs and owes an interrupt (pyw_reinterrupt could not inject
 * it again: to be done with pyw_interp_interrupt), else 1. */
int pyw_interp_owed(pyw_interp *w, uint64_t task);

/* ---- codec (codec.c): PyObject <-> wire; GIL held */
/* Appends the encoding of o. pyworkers.Buffer objects (and memoryviews of them) are encoded
 * by reference into refs; with refs NULL they are refused. With share_large, bytes of at least
 * PYW_SHARE_MIN are copied once into a new shared buffer and sent by reference (the receiver
 * sees a read-only memoryview). On failure returns -1 with path/message in err (path built from
 * the innermost element out, its inner end kept when too long), no Python exception set, and b and
 * refs as they were. */
#define PYW_SHARE_MIN (64 * 1024)
typedef struct {
	char path[256];
	char msg[256];
	int nomem;   /* it failed for want of memory: MemoryError, where a value that cannot cross is a TypeError */
	int stopped; /* an interrupt stopped it (pyw_codec_stop) */
} pyw_enc_err;
int pyw_encode(pyw_buf *b, pyw_refs *refs, int share_large, PyObject *o, pyw_enc_err *err);
/* Encodes call_many's flat list of outcomes (flag, value, flag, value, ...) as a list, each
 * outcome on its own: one whose value cannot cross becomes (None, (path, reason)), so that it
 * fails that item alone. -1 (with err) only when the list itself is not such a list or memory
 * runs out. */
int pyw_encode_outcomes(pyw_buf *b, pyw_refs *refs, PyObject *list, pyw_enc_err *err);
/* Decodes one value from *p (advancing it); 'B' tags index refs[0..nrefs) and become read-only
 * memoryviews of pyworkers.Buffer. NULL with a Python exception set on failure. */
PyObject *pyw_decode(const char **p, const char *end, pyw_shared *const *refs, size_t nrefs);

/* ---- the pyworkers built-in module (module.c) */
PyObject *pyw_module_init(void);
/* The interpreter whose pyworkers module m is (borrowed; NULL when m is NULL, not the pyworkers
 * module, or the module of an interpreter pyworkers did not make). */
pyw_interp *pyw_module_interp(PyObject *m);
int pyw_module_set_handle(PyObject *module, uintptr_t handle, pyw_interp *w);
/* Other packages (channels) add to the module: fn runs in every interpreter's module exec.
 * Register before the runtime starts (from a Go init function). */
int pyw_module_add_ext(int (*fn)(PyObject *module));
PyObject *pyw_buffer_wrap(pyw_shared *s, int readonly); /* new Buffer object holding a reference */
pyw_shared *pyw_buffer_shared(PyObject *o);             /* s if o is a Buffer (borrowed), else NULL */

/* Initializes cv to time its waits on CLOCK_MONOTONIC (pyw_deadline_after). */
static inline void pyw_cond_init_monotonic(pthread_cond_t *cv) {
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

/* CLOCK_MONOTONIC now, in nanoseconds. */
static inline int64_t pyw_monotonic_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The CLOCK_MONOTONIC time ns nanoseconds from now, as pthread_cond_timedwait takes it (with a
 * condition variable set to that clock). */
static inline void pyw_deadline_after(struct timespec *ts, int64_t ns) {
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ns / 1000000000;
	ts->tv_nsec += ns % 1000000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* ---- interruptible waits (interp.c), for blocking calls made with the GIL released.
 * pyw_wait_begin registers (mu, cv) so that interrupting the current task broadcasts cv under mu;
 * while registered, a wait loop must re-check pyw_wait_interrupted() under mu before sleeping.
 * On an interpreter's other threads (threads its code started) only the interrupts of its
 * wind-down count, from the wait's pyw_wait_prepare on; threads of no interpreter register
 * nothing (both are no-ops). */
void pyw_wait_begin(pthread_mutex_t *mu, pthread_cond_t *cv);
int pyw_wait_interrupted(void);
/* GIL held, before releasing it to wait: an interrupt the eval loop has already raised (the
 * code may have caught it) stops ending waits, so a wait in its cleanup is not interrupted a
 * second time. */
/* mod is the interpreter of the pyworkers module the waiting object comes from (see
 * pyw_module_interp): on the interpreter's other threads, the one whose wind-down may interrupt
 * the wait. Taken from the object, not looked up by name: code may take the module out of
 * sys.modules, and the look-up would cost each wait (print() on a thread is one). */
void pyw_wait_prepare(pyw_interp *mod);
/* Py_BEGIN_ALLOW_THREADS for a call that may wait in one of our waits (a queue, or Go code that
 * may wait on one): pyw_wait_prepare(mod) first, always. Ended by Py_END_ALLOW_THREADS. */
#define PYW_BEGIN_WAIT(mod)                                                                                \
	pyw_wait_prepare(mod);                                                                             \
	Py_BEGIN_ALLOW_THREADS
/* GIL held: whether the task running on this thread (an interpreter's own) has been interrupted,
 * whether or not the KeyboardInterrupt was raised yet, or caught. */
int pyw_task_interrupted(void);
/* GIL held, on an interpreter's own thread: the running task's interrupt was raised and then
 * swallowed by code that ignores exceptions (a weakref callback, a __del__: CPython reports
 * them to sys.unraisablehook: module.c's); inject it again, or, when the finalizer ran in code
 * importlib called, leave it to the interrupter (see owed_task). 1 if it did; 0 in a nested
 * interpreter's code (concurrent.interpreters), which gets no interrupt of the task's. */
int pyw_reinterrupt(void);
/* GIL held, on an interpreter's own thread whose task was interrupted: on, the task owes another
 * interrupt, which the interrupter's watch injects within 50 ms (see owed_task), for code that
 * may hang with the task's one interrupt spent (str() of an exception raised after it); 1 if
 * this made it owed (0: it owed one already, or no task runs). Off takes back one it made. */
int pyw_owe_interrupt(int on);
/* GIL held, polled by the codec while it encodes or decodes: whether an interrupt of the task
 * this thread serves is waiting for the GIL, which the codec holds for as long as it runs (a
 * huge value, a structure whose shared parts expand without end). 1: stop, with the call marked
 * interrupted. */
int pyw_codec_stop(void);
/* GIL held: between pyw_codec_carry(1) and pyw_codec_carry(0), the codec counts the values of
 * successive conversions together for its polls (a batch's items, each too small for the first
 * one, about a millisecond in). */
void pyw_codec_carry(int on);
/* GIL held: a conversion the task's own code asks for (a channel's send or receive) may be
 * stopped by the task's interrupt as its call's arguments and result are; between begin and
 * end. stopped: the conversion failed because the codec stopped (pyw_enc_err.stopped; a
 * decoding's KeyboardInterrupt). Then pyw_stoppable_end clears its error, lets the interrupter
 * (which waits for the GIL) finish, and returns PYW_STOP_RAISED with the interrupt raised here,
 * once (not also injected into the code that handles it), or PYW_STOP_AGAIN when the
 * interrupter injected nothing (an async call's loop is asked to cancel its task instead; the
 * task holds interrupts off): the caller converts again. Else PYW_STOP_NONE. */
typedef struct {
	int prev;
	unsigned stops;
	uint64_t injections;
} pyw_stoppable;
#define PYW_STOP_NONE 0
#define PYW_STOP_RAISED 1
#define PYW_STOP_AGAIN 2
pyw_stoppable pyw_stoppable_begin(void);
int pyw_stoppable_end(pyw_stoppable s, int stopped);
/* GIL held, on an interpreter's own thread (its own code: not a nested interpreter's, below): if
 * the running task was interrupted, it is ending on it (it only keeps what finished): an
 * interrupt repeated to end it (CloseContext's) that is pending is withdrawn, and the next ones
 * are not injected (see held_task). 1 if it was. */
int pyw_hold_if_interrupted(void);
/* These act only while the interpreter's own code runs on its thread, not a nested
 * interpreter's (concurrent.interpreters): there they do nothing (take_cancel returns 0). */
/* GIL held, on an interpreter's own thread: interrupts of the running task are deferred (1) or
 * not (0) from now on (see shielded). */
void pyw_set_shielded(int on);
/* GIL held, on an interpreter's own thread: the socket an interrupt writes a byte to, or -1. */
void pyw_set_wake_fd(int fd);
/* GIL held, on an interpreter's own thread: the coroutine of the async call running now on the
 * bootstrap's event loop (NULL or None: none). */
void pyw_set_main_coro(PyObject *coro);
/* GIL held, on an interpreter's own thread: whether an interrupt asked the event loop to cancel
 * the running task's coroutine since the last time; the request is taken. */
int pyw_take_cancel(void);
void pyw_wait_end(void);
/* GIL held: whether an interrupt was injected into this thread (an interpreter's own; on its
 * other threads, the wind-down's KeyboardInterrupt, of mod's interpreter) and not raised yet. A call that takes an item must not return it then: the pending KeyboardInterrupt
 * would be raised as the call returns, and the item lost with the frame. */
int pyw_interrupt_pending(pyw_interp *mod);
/* GIL held, on an interpreter's own thread running its code: if an interrupter of the running
 * task waits for the GIL (see stop_codec), let it in first (the GIL released for the
 * microseconds it takes), so that its interrupt is pending here rather than raised at the eval
 * loop's check right after the call returns: a receive checks, then takes nothing. */
void pyw_admit_interrupter(void);
/* Whether this is w's own thread running w's code (GIL held): output written here is the
 * running call's, written out at its end even without a line end. */
int pyw_on_own_thread(pyw_interp *w);
/* GIL held: raise KeyboardInterrupt for an interrupt a wait noticed, withdrawing the pending
 * asynchronous one so it is raised once. Returns NULL for convenience. */
PyObject *pyw_raise_interrupt(void);

#endif
