// runtime.c — starting and finalizing CPython (on the runtime's own locked OS thread).
#include "pyw.h"

#include <dlfcn.h>
#include <marshal.h>
#include <string.h>

static int inittab_added;

const char *pyw_boot_code;
Py_ssize_t pyw_boot_len;

/* Compiles the bootstrap once, in the main interpreter, into pyw_boot_code (marshalled): each new
 * interpreter then loads it in microseconds rather than compiling it again (~3 ms). */
static int compile_boot(const char *boot, char *err, size_t errlen) {
	PyObject *code = Py_CompileString(boot, "<pyworkers bootstrap>", Py_file_input);
	PyObject *bytes = code ? PyMarshal_WriteObjectToString(code, Py_MARSHAL_VERSION) : NULL;
	Py_XDECREF(code);
	char *copy = bytes ? malloc((size_t)PyBytes_GET_SIZE(bytes)) : NULL;
	if (copy == NULL) {
		PyObject *exc = PyErr_GetRaisedException();
		PyObject *s = exc ? PyObject_Str(exc) : NULL;
		const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;
		snprintf(err, errlen, "compiling the pyworkers bootstrap: %s", msg ? msg : "out of memory");
		PyErr_Clear();
		Py_XDECREF(s);
		Py_XDECREF(exc);
		Py_XDECREF(bytes);
		return -1;
	}
	memcpy(copy, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
	pyw_boot_len = PyBytes_GET_SIZE(bytes);
	pyw_boot_code = copy;
	Py_DECREF(bytes);
	return 0;
}

void pyw_status_msg(PyStatus st, const char *otherwise, char *err, size_t errlen) {
	snprintf(err, errlen, "%s%s%s", st.func ? st.func : "", st.func ? ": " : "", st.err_msg ? st.err_msg : otherwise);
}

PyThreadState *pyw_runtime_init(const char *home, const char *executable, const char *boot, char *err, size_t errlen) {
	if (!inittab_added) {
		if (PyImport_AppendInittab("pyworkers", pyw_module_init) < 0) {
			snprintf(err, errlen, "PyImport_AppendInittab(pyworkers) failed");
			return NULL;
		}
		inittab_added = 1;
	}
	/* UTF-8 mode (as python -X utf8, and as python itself starts in the C locale): file names,
	 * open()'s default and os.fsencode are UTF-8. Without it the process's C locale decides,
	 * and Go never sets one: "C", ASCII, where a path such as données/ cannot even be named. */
	PyPreConfig pre;
	PyPreConfig_InitIsolatedConfig(&pre);
	pre.utf8_mode = 1;
	PyStatus pst = Py_PreInitialize(&pre);
	if (PyStatus_Exception(pst)) {
		pyw_status_msg(pst, "Python could not pre-initialize", err, errlen);
		return NULL;
	}
	PyConfig cfg;
	PyConfig_InitIsolatedConfig(&cfg);
	cfg.install_signal_handlers = 0; /* signals belong to Go */
	cfg.site_import = 1;             /* site-packages, so installed libraries import */
	cfg.parse_argv = 0;
	cfg.faulthandler = 0;
	PyStatus st = PyConfig_SetBytesString(&cfg, &cfg.program_name, "pyworkers");
	if (!PyStatus_Exception(st) && home != NULL && home[0] != 0) {
		st = PyConfig_SetBytesString(&cfg, &cfg.home, home);
	}
	if (!PyStatus_Exception(st) && executable != NULL && executable[0] != 0) {
		st = PyConfig_SetBytesString(&cfg, &cfg.executable, executable); /* also finds a venv (getpath) */
	}
	if (!PyStatus_Exception(st)) {
		st = Py_InitializeFromConfig(&cfg);
	}
	PyConfig_Clear(&cfg);
	if (PyStatus_Exception(st)) {
		pyw_status_msg(st, "Python asked to exit during start-up", err, errlen);
		return NULL;
	}
	if (compile_boot(boot, err, errlen) < 0) {
		Py_FinalizeEx();
		return NULL;
	}
	return PyEval_SaveThread();
}

static void copy_sys_str(const char *name, char *dst, size_t n) {
	dst[0] = 0;
	PyObject *o = PySys_GetObject(name); /* borrowed */
	const char *s = (o && PyUnicode_Check(o)) ? PyUnicode_AsUTF8(o) : NULL;
	if (s == NULL) {
		PyErr_Clear();
		return;
	}
	snprintf(dst, n, "%s", s);
}

void pyw_runtime_info(PyThreadState *main, char *version, size_t vlen, char *prefix, size_t plen, int *debug) {
	PyEval_RestoreThread(main);
	snprintf(version, vlen, "%s", Py_GetVersion());
	copy_sys_str("prefix", prefix, plen);
#ifdef Py_DEBUG
	*debug = 1;
#else
	*debug = 0;
#endif
	PyEval_SaveThread();
}

int pyw_runtime_finalize(PyThreadState *main) {
	PyEval_RestoreThread(main);
	free((void *)pyw_boot_code);
	pyw_boot_code = NULL;
	pyw_boot_len = 0;
	return Py_FinalizeEx();
}

int pyw_libpython_path(char *buf, size_t n) {
	Dl_info info;
	if (dladdr((void *)&Py_InitializeFromConfig, &info) == 0 || info.dli_fname == NULL) {
		return -1;
	}
	snprintf(buf, n, "%s", info.dli_fname);
	return 0;
}
