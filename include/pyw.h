/*
 * pyw.h — the C shims behind package cpython. Every function here is called from Go through cgo
 * and does its whole job in that one call: attach the interpreter's thread state, work, detach.
 * C never keeps a Go pointer; Go finds its objects again through runtime/cgo.Handle values.
 *
 * Thread rules (enforced by the Go side, assumed here):
 *   - pyw_runtime_init and pyw_runtime_finalize run on the runtime's own locked OS thread;
 *   - pyw_interp_new, pyw_interp_end and all pyw_interp_* calls run on that interpreter's own
 *     locked OS thread, with no thread state attached on entry;
 *   - pyw_interp_interrupt is the one call made from another thread; it makes a temporary
 *     thread state of its own and is serialised against pyw_interp_end by the Go side.
 */
#ifndef PYW_H
#define PYW_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stddef.h>

#include "pyw_wire.h"

/* Status of a call into an interpreter (pyw_result.status). */
#define PYW_OK 0          /* data: the encoded result */
#define PYW_PYERR 1       /* data: encoded (type, message, traceback) of the Python exception */
#define PYW_INTERRUPTED 2 /* like PYW_PYERR, and the exception is the interrupt we injected */
#define PYW_CONVERT 3     /* data: encoded (path, message): the result has no wire encoding */
#define PYW_FAILED 4      /* data: encoded str: a failure of pyworkers itself (e.g. out of memory) */

/* A growable byte buffer owned by C (malloc). */
typedef struct {
	char *data;
	size_t len, cap;
} pyw_buf;

int pyw_buf_reserve(pyw_buf *b, size_t extra);
void pyw_buf_free(pyw_buf *b);

typedef struct {
	int status;
	const char *data; /* points into the interpreter's output buffer: valid until its next call */
	size_t len;
	int interrupted; /* an interrupt was injected into this call (whatever its outcome) */
} pyw_result;

/* One own-GIL interpreter, owned by its Go *Interpreter. */
typedef struct pyw_interp {
	PyThreadState *tstate;
	PyInterpreterState *interp;
	unsigned long thread_ident; /* the OS thread that created (and owns) tstate */
	uint64_t current_task;      /* task running now, 0 when idle; changed only with the GIL held */
	uint64_t interrupted_task;  /* task an interrupt was injected into; changed with the GIL held */
	PyObject *helpers;          /* the bootstrap module's namespace (dict) */
	PyObject **slots;           /* resolved call targets, indexed by the Go side */
	size_t nslots;
	pyw_buf out;
} pyw_interp;

/* ---- runtime (runtime.c) */
/* Starts CPython. On failure returns NULL and writes a message to err. */
PyThreadState *pyw_runtime_init(const char *home, char *err, size_t errlen);
/* Reads runtime facts (main interpreter, on the runtime thread). */
void pyw_runtime_info(PyThreadState *main, char *version, size_t vlen, char *prefix, size_t plen, int *debug);
int pyw_runtime_finalize(PyThreadState *main);

/* ---- interpreters (interp.c) */
/* Creates an own-GIL interpreter on the calling thread and runs the bootstrap source in it with
 * setup (an encoded dict). On failure returns NULL and sets *res (data in *errbuf, which the
 * caller frees with pyw_buf_free). */
pyw_interp *pyw_interp_new(uintptr_t handle, const char *boot, size_t bootlen, const char *setup,
                           size_t setuplen, pyw_result *res, pyw_buf *errbuf);
void pyw_interp_end(pyw_interp *w);
/* Runs source: mode 0 = exec in __main__, 1 = eval in __main__ (result encoded). */
pyw_result pyw_interp_run(pyw_interp *w, int mode, const char *src, size_t len, const char *name,
                          uint64_t task);
/* Resolves target ("pkg.mod:func", "path/file.py:func") into slot. */
pyw_result pyw_interp_resolve(pyw_interp *w, const char *target, size_t len, size_t slot);
/* Calls slot with args: an encoded tuple followed by an encoded dict of keywords or None. */
pyw_result pyw_interp_call(pyw_interp *w, size_t slot, const char *args, size_t len, uint64_t task);
/* From any other thread: injects KeyboardInterrupt into task if (and only if) it is still the
 * running one. Returns 1 if injected. Blocks until it can take the interpreter's GIL. */
int pyw_interp_interrupt(pyw_interp *w, uint64_t task);

/* ---- codec (codec.c): PyObject <-> wire; GIL held */
/* Appends the encoding of o. On failure returns -1 with path/message in err (path is built from
 * the outside in) and no Python exception set. */
typedef struct {
	char path[256];
	char msg[256];
} pyw_enc_err;
int pyw_encode(pyw_buf *b, PyObject *o, pyw_enc_err *err);
/* Decodes one value from *p (advancing it). NULL with a Python exception set on failure. */
PyObject *pyw_decode(const char **p, const char *end);

/* ---- the pyworkers built-in module (module.c) */
PyObject *pyw_module_init(void);
int pyw_module_set_handle(PyObject *module, uintptr_t handle);

#endif
