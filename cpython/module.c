// module.c — pyworkers, the built-in module of every pyworkers interpreter (`import pyworkers`).
// Multi-phase init, per-module state only, safe in own-GIL interpreters. Its C part is the
// bridge to Go (_write, _flush); cpython/bootstrap.py adds the Python-level API.
#include "pyw.h"

#include "_cgo_export.h"

typedef struct {
	uintptr_t handle; /* cgo.Handle of the Go *Interpreter; 0 until set */
} modstate;

static modstate *state_of(PyObject *m) { return (modstate *)PyModule_GetState(m); }

/* pyworkers._write(fd, text): hand text to the Go writer for fd (1 stdout, 2 stderr). */
static PyObject *mod_write(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
	if (nargs != 2 || !PyLong_Check(args[0]) || !PyUnicode_Check(args[1])) {
		PyErr_SetString(PyExc_TypeError, "_write(fd: int, text: str)");
		return NULL;
	}
	int fd = PyLong_AsInt(args[0]);
	if (fd == -1 && PyErr_Occurred()) {
		return NULL;
	}
	Py_ssize_t n;
	const char *s = PyUnicode_AsUTF8AndSize(args[1], &n);
	if (s == NULL) {
		return NULL;
	}
	uintptr_t h = state_of(m)->handle;
	if (h == 0) {
		PyErr_SetString(PyExc_RuntimeError, "pyworkers output is not connected");
		return NULL;
	}
	int rc;
	/* args[1] keeps s alive while the GIL is released for a possibly slow writer */
	Py_BEGIN_ALLOW_THREADS
	rc = pywGoWrite(h, fd, (char *)s, (size_t)n);
	Py_END_ALLOW_THREADS
	if (rc != 0) {
		PyErr_SetString(PyExc_OSError, "pyworkers: the Go writer for this stream returned an error");
		return NULL;
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
	Py_BEGIN_ALLOW_THREADS
	rc = pywGoFlush(h, fd);
	Py_END_ALLOW_THREADS
	if (rc != 0) {
		PyErr_SetString(PyExc_OSError, "pyworkers: the Go writer for this stream returned an error");
		return NULL;
	}
	Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"_write", (PyCFunction)(void (*)(void))mod_write, METH_FASTCALL, "write(fd, text): send text to the Go side."},
    {"_flush", mod_flush, METH_O, "flush(fd): write out a pending partial line."},
    {NULL, NULL, 0, NULL},
};

static int mod_exec(PyObject *m) {
	state_of(m)->handle = 0;
	return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, mod_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
    {0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyworkers",
    .m_doc = "pyworkers: this interpreter's link to the Go program that runs it.",
    .m_size = sizeof(modstate),
    .m_methods = methods,
    .m_slots = slots,
};

PyObject *pyw_module_init(void) { return PyModuleDef_Init(&moddef); }

int pyw_module_set_handle(PyObject *module, uintptr_t handle) {
	modstate *st = state_of(module);
	if (st == NULL) {
		return -1;
	}
	st->handle = handle;
	return 0;
}
