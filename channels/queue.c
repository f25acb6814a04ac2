// queue.c — the queue core: items in the wire encoding, one mutex and two condition variables
// per queue, a process-wide registry from id to queue. No Python objects, no GIL.
#define _GNU_SOURCE
#include "pyw_queue.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* What a send or a receive touches under mu comes first, in as few cache lines as the mutex
 * allows: those lines move between the sender's and the receiver's cores on every item. */
struct pyw_queue {
	pthread_mutex_t mu;
	pyw_item *head, *tail;
	_Atomic size_t len;
	int recv_waiting, send_waiting;     /* asleep on can_recv / can_send */
	_Atomic int recv_spinning, send_spinning; /* spinning before they would sleep (spin) */
	pyw_item *spare; /* small nodes kept for reuse, linked by next */
	size_t nspare;
	size_t capacity; /* 0: unbounded */
	_Atomic int closed;
	pthread_cond_t can_recv, can_send;
	int64_t id;
	_Atomic long refs;
	struct pyw_queue *reg_prev, *reg_next; /* its registry bucket's list, under reg_mu */
};

/* The registry: a hash table from id to queue, its buckets doubly linked lists, under reg_mu.
 * Ids are handed out in sequence, so id modulo a power of two spreads them evenly. It doubles
 * when it holds more queues than buckets (a lookup scanned every live queue before: 2.3 ms
 * with 100,000 of them, all that time holding the lock New and every last release take); a
 * table that cannot grow (no memory) only makes its lists longer. It never shrinks: 8 bytes
 * per bucket at the most queues ever live at once. */
#define REG_MIN 64
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pyw_queue *reg_first[REG_MIN];
static pyw_queue **reg = reg_first;
static size_t reg_size = REG_MIN, reg_count;
static _Atomic int64_t next_id = 1;

static pyw_queue **reg_bucket(pyw_queue **table, size_t size, int64_t id) {
	return &table[(uint64_t)id & (size - 1)];
}

/* Links q at the head of its bucket in table. reg_mu held. */
static void reg_link(pyw_queue **table, size_t size, pyw_queue *q) {
	pyw_queue **b = reg_bucket(table, size, q->id);
	q->reg_prev = NULL;
	q->reg_next = *b;
	if (*b != NULL) {
		(*b)->reg_prev = q;
	}
	*b = q;
}

/* Doubles the table, if memory allows. reg_mu held. */
static void reg_grow(void) {
	size_t size = reg_size * 2;
	pyw_queue **table = calloc(size, sizeof *table);
	if (table == NULL) {
		return;
	}
	for (size_t k = 0; k < reg_size; k++) {
		for (pyw_queue *q = reg[k], *next; q != NULL; q = next) {
			next = q->reg_next;
			reg_link(table, size, q);
		}
	}
	if (reg != reg_first) {
		free(reg);
	}
	reg = table;
	reg_size = size;
}

/* An item holds its bytes in the same allocation, right after the header (one malloc per item),
 * with room for at least PYW_SMALL_ITEM bytes. */

/* A node that can carry any small item: no references held. */
static int reusable(const pyw_item *it) { return it->len <= PYW_SMALL_ITEM && it->refs.v == NULL; }

/* Most small nodes a queue keeps (a few KiB); beyond it they are freed. */
#define SPARE_MAX 256

pyw_item *pyw_item_new(const char *data, size_t len, pyw_shared *const *refs, size_t nrefs) {
	if (len > SIZE_MAX - sizeof(pyw_item)) {
		return NULL;
	}
	pyw_item *it = malloc(sizeof *it + (len < PYW_SMALL_ITEM ? PYW_SMALL_ITEM : len));
	if (it == NULL) {
		return NULL;
	}
	memset(it, 0, sizeof *it);
	it->data = (char *)(it + 1);
	if (len > 0) {
		memcpy(it->data, data, len);
	}
	it->len = len;
	for (size_t i = 0; i < nrefs; i++) {
		if (pyw_refs_add(&it->refs, refs[i]) < 0) {
			pyw_item_free(it);
			return NULL;
		}
	}
	return it;
}

void pyw_item_free(pyw_item *it) {
	if (it == NULL) {
		return;
	}
	pyw_refs_free(&it->refs);
	free(it);
}

void pyw_item_free_chain(pyw_item *it) {
	for (pyw_item *next; it != NULL; it = next) {
		next = it->next;
		pyw_item_free(it);
	}
}

pyw_queue *pyw_queue_new(size_t capacity) {
	pyw_queue *q = aligned_alloc(64, (sizeof *q + 63) / 64 * 64); /* mu starts a cache line */
	if (q == NULL) {
		return NULL;
	}
	memset(q, 0, sizeof *q);
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
	/* Held for a few instructions at a time: spin briefly on contention rather than sleep in
	 * the kernel at once (glibc's default), which made a busy queue spend a third of its time
	 * in futex calls. */
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
	pthread_mutex_init(&q->mu, &ma);
	pthread_mutexattr_destroy(&ma);
	pyw_cond_init_monotonic(&q->can_recv);
	pyw_cond_init_monotonic(&q->can_send);
	q->capacity = capacity;
	atomic_init(&q->refs, 1);
	q->id = atomic_fetch_add(&next_id, 1);
	pthread_mutex_lock(&reg_mu);
	if (++reg_count > reg_size) {
		reg_grow();
	}
	reg_link(reg, reg_size, q);
	pthread_mutex_unlock(&reg_mu);
	return q;
}

pyw_queue *pyw_queue_lookup(int64_t id) {
	pthread_mutex_lock(&reg_mu);
	pyw_queue *q = *reg_bucket(reg, reg_size, id);
	while (q != NULL && q->id != id) {
		q = q->reg_next;
	}
	if (q != NULL) {
		/* take a reference only from a live holder: at 0 the queue is being freed */
		long r = atomic_load(&q->refs);
		while (r > 0 && !atomic_compare_exchange_weak(&q->refs, &r, r + 1)) {
		}
		if (r == 0) {
			q = NULL;
		}
	}
	pthread_mutex_unlock(&reg_mu);
	return q;
}

void pyw_queue_incref(pyw_queue *q) { atomic_fetch_add(&q->refs, 1); }

void pyw_queue_decref(pyw_queue *q) {
	if (atomic_fetch_sub(&q->refs, 1) != 1) {
		return;
	}
	/* The last reference: lookups no longer revive it (they take references only above 0). */
	pthread_mutex_lock(&reg_mu);
	if (q->reg_prev != NULL) {
		q->reg_prev->reg_next = q->reg_next;
	} else {
		*reg_bucket(reg, reg_size, q->id) = q->reg_next;
	}
	if (q->reg_next != NULL) {
		q->reg_next->reg_prev = q->reg_prev;
	}
	reg_count--;
	pthread_mutex_unlock(&reg_mu);
	pyw_item_free_chain(q->head);
	pyw_item_free_chain(q->spare);
	pthread_cond_destroy(&q->can_recv);
	pthread_cond_destroy(&q->can_send);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

int64_t pyw_queue_id(pyw_queue *q) { return q->id; }
size_t pyw_queue_capacity(pyw_queue *q) { return q->capacity; }
size_t pyw_queue_len(pyw_queue *q) { return atomic_load_explicit(&q->len, memory_order_relaxed); }

int pyw_queue_is_closed(pyw_queue *q) { return atomic_load(&q->closed); }

int pyw_queue_close(pyw_queue *q) {
	pthread_mutex_lock(&q->mu);
	int was = q->closed;
	atomic_store(&q->closed, 1);
	pthread_cond_broadcast(&q->can_recv);
	pthread_cond_broadcast(&q->can_send);
	pthread_mutex_unlock(&q->mu);
	return !was;
}

/* How long a waiter spins before it sleeps: a sleeping thread takes several microseconds to
 * wake, far longer than the other side usually needs to hand over the next item. */
#define SPIN_NS 20000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* How many threads may spin at once, process-wide: one per core this process may run on (its
 * affinity: taskset, cpusets). Two threads handing items back and forth must both be able to
 * spin: with one slot on 2 cores, ping-pong runs often fell into a pattern where one side always
 * slept (p50 6.4 us instead of 1.6). On one core spinning only delays the thread that will
 * answer: no slot (-1; 0 means not yet known). */
static _Atomic int spinners;
static int max_spinners;

static int usable_cpus(void) {
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0) {
		return CPU_COUNT(&set);
	}
	return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

static int spin_slots(void) {
	int m = __atomic_load_n(&max_spinners, __ATOMIC_RELAXED);
	if (m == 0) {
		int n = usable_cpus();
		m = n > 1 ? n : -1;
		__atomic_store_n(&max_spinners, m, __ATOMIC_RELAXED);
	}
	return m;
}

/* Whether the caller's cancel flag (pyw_queue_cancel) is set; read with or without q->mu. */
static int cancelled(const int *cancel) { return cancel != NULL && __atomic_load_n(cancel, __ATOMIC_RELAXED); }

/* Spins (q->mu not held) until the queue may have what the caller waits for. */
static void spin(pyw_queue *q, int for_items, int *cancel) {
	if (atomic_fetch_add_explicit(&spinners, 1, memory_order_relaxed) >= spin_slots()) {
		atomic_fetch_sub_explicit(&spinners, 1, memory_order_relaxed);
		return; /* enough threads spin already: sleep at once */
	}
	_Atomic int *spinning = for_items ? &q->recv_spinning : &q->send_spinning;
	atomic_fetch_add_explicit(spinning, 1, memory_order_relaxed);
	int64_t until = now_ns() + SPIN_NS;
	for (int i = 1;; i++) {
		size_t len = atomic_load_explicit(&q->len, memory_order_relaxed);
		if ((for_items ? len > 0 : len < q->capacity) || atomic_load_explicit(&q->closed, memory_order_relaxed) ||
		    cancelled(cancel) || pyw_wait_interrupted()) {
			break;
		}
		cpu_relax();
		if (i % 64 == 0 && now_ns() > until) {
			break;
		}
	}
	atomic_fetch_sub_explicit(spinning, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&spinners, 1, memory_order_relaxed);
}

/* One operation's wait, across every wait_for it makes (push_many waits once per run of items
 * that fits): one deadline, one spin, one registration for interrupts. */
typedef struct {
	int64_t timeout_ns;
	int *cancel;
	struct timespec deadline; /* with timeout_ns > 0, once has_deadline */
	int has_deadline, spun;
	int registered; /* the caller calls pyw_wait_end after unlocking (see unlock) */
} waiter;

static waiter waiter_for(int64_t timeout_ns, int *cancel) {
	waiter w = {.timeout_ns = timeout_ns, .cancel = cancel, .spun = timeout_ns == PYW_Q_NO_SPIN};
	return w;
}

/* Waits on cv (q->mu held) until woken, the deadline passes, the wait is cancelled or the
 * interpreter's task is interrupted. Returns PYW_Q_OK when woken (the caller re-checks). */
static int wait_on(pyw_queue *q, pthread_cond_t *cv, const waiter *w) {
	if (cancelled(w->cancel)) {
		return PYW_Q_CANCELLED;
	}
	if (pyw_wait_interrupted()) {
		return PYW_Q_INTERRUPTED;
	}
	if (w->timeout_ns < 0) {
		pthread_cond_wait(cv, &q->mu);
		return PYW_Q_OK;
	}
	int rc = pthread_cond_timedwait(cv, &q->mu, &w->deadline);
	return rc == ETIMEDOUT ? PYW_Q_TIMEOUT : PYW_Q_OK;
}

/* A waiter that leaves without what it waited for (interrupted, cancelled, timed out; q->mu
 * held) passes on the wake it may have had: the one signal a push or pop gave for what is there
 * now, or the one skipped because this thread was spinning for it (see wake). Else a thread
 * asleep for the same item or slot would sleep on beside it until the next push or pop. */
static int leave_wait(pyw_queue *q, int for_items, int rc) {
	size_t len = atomic_load_explicit(&q->len, memory_order_relaxed);
	int there = for_items ? q->head != NULL : (q->capacity == 0 || len < q->capacity);
	if (there && (for_items ? q->recv_waiting : q->send_waiting) > 0) {
		pthread_cond_signal(for_items ? &q->can_recv : &q->can_send);
	}
	return rc;
}

/* The wait shared by push (for a free slot) and pop (for an item), q->mu held. Returns PYW_Q_OK
 * when the caller can go ahead. A sender fails on a closed queue at once; a receiver first
 * drains what is left. */
static int wait_for(pyw_queue *q, int for_items, waiter *w) {
	pthread_cond_t *cv = for_items ? &q->can_recv : &q->can_send;
	int *waiting = for_items ? &q->recv_waiting : &q->send_waiting;
	for (;;) {
		if (w->timeout_ns != 0 && pyw_wait_interrupted()) {
			/* before taking an item or a slot: the task is over */
			return leave_wait(q, for_items, PYW_Q_INTERRUPTED);
		}
		if (!for_items && q->closed) {
			return PYW_Q_CLOSED;
		}
		size_t len = atomic_load_explicit(&q->len, memory_order_relaxed);
		if (for_items ? q->head != NULL : (q->capacity == 0 || len < q->capacity)) {
			return PYW_Q_OK;
		}
		if (q->closed) {
			return PYW_Q_CLOSED;
		}
		if (w->timeout_ns == 0 || (w->timeout_ns == PYW_Q_SPIN_ONLY && w->spun)) {
			return for_items ? PYW_Q_EMPTY : PYW_Q_FULL;
		}
		if (w->timeout_ns > 0 && !w->has_deadline) {
			pyw_deadline_after(&w->deadline, w->timeout_ns); /* from the operation's first wait */
			w->has_deadline = 1;
		}
		if (!w->spun || !w->registered) {
			pthread_mutex_unlock(&q->mu);
			if (!w->spun) {
				spin(q, for_items, w->cancel);
				w->spun = 1;
			} else {
				/* lock order: the interpreter's wait_mu (others_mu on its other threads), then q->mu */
				pyw_wait_begin(&q->mu, cv);
				w->registered = 1;
			}
			pthread_mutex_lock(&q->mu);
			continue;
		}
		(*waiting)++;
		int rc = wait_on(q, cv, w);
		(*waiting)--;
		if (rc != PYW_Q_OK) {
			return leave_wait(q, for_items, rc);
		}
	}
}

/* Every writer of len holds q->mu: a plain store, no locked instruction. */
static size_t add_len(pyw_queue *q, size_t k, int sign) {
	size_t len = atomic_load_explicit(&q->len, memory_order_relaxed);
	len = sign > 0 ? len + k : len - k;
	atomic_store_explicit(&q->len, len, memory_order_relaxed);
	return len;
}

/* Room left in a bounded queue (senders wait only on those); none past the capacity, which
 * only items put back (pyw_queue_unget) go beyond. */
static size_t free_slots(const pyw_queue *q) {
	size_t len = atomic_load_explicit(&q->len, memory_order_relaxed);
	return q->capacity == 0 ? SIZE_MAX : len >= q->capacity ? 0 : q->capacity - len;
}

int pyw_queue_full_now(pyw_queue *q) { return !atomic_load(&q->closed) && free_slots(q) == 0; }

/* Wakes one waiter on cv for one item or slot, all of them for more; none when threads
 * spinning for them are at least as many as what is there to take (ready). A spinner always
 * checks the queue again under mu before it sleeps, so skipping the wake loses nothing; waking
 * a sleeper that a spinner beats to the item costs a futex call here and, there, a thread that
 * wakes for nothing and then spins, taking a spin slot from the thread the next item is for. */
static void wake(pthread_cond_t *cv, int waiting, _Atomic int *spinning, size_t k, size_t ready) {
	if (waiting > 0 && (size_t)atomic_load_explicit(spinning, memory_order_relaxed) < ready) {
		if (k > 1) {
			pthread_cond_broadcast(cv);
		} else {
			pthread_cond_signal(cv);
		}
	}
}

/* Appends the chain first..last of k items at the tail (q->mu held, room checked) and wakes
 * receivers. */
static void link_chain(pyw_queue *q, pyw_item *first, pyw_item *last, size_t k) {
	last->next = NULL;
	if (q->tail != NULL) {
		q->tail->next = first;
	} else {
		q->head = first;
	}
	q->tail = last;
	size_t len = add_len(q, k, +1);
	wake(&q->can_recv, q->recv_waiting, &q->recv_spinning, k, len);
}

/* Takes up to max items from the head as a chain (q->mu held, the queue not empty), sets *k and
 * wakes senders. */
static pyw_item *unlink_chain(pyw_queue *q, size_t max, size_t *k) {
	pyw_item *first = q->head, *last = first;
	size_t n = 1;
	while (n < max && last->next != NULL) {
		last = last->next;
		n++;
	}
	q->head = last->next;
	if (q->head == NULL) {
		q->tail = NULL;
	}
	last->next = NULL;
	add_len(q, n, -1);
	wake(&q->can_send, q->send_waiting, &q->send_spinning, n, free_slots(q));
	*k = n;
	return first;
}

/* Releases q->mu after an operation that may have waited (w's waits). */
static void unlock(pyw_queue *q, const waiter *w) {
	pthread_mutex_unlock(&q->mu);
	if (w->registered) {
		pyw_wait_end();
	}
}

/* Pushes one item made by pyw_item_new; on any outcome but PYW_Q_OK it stays with the caller. */
static int push(pyw_queue *q, pyw_item *it, int64_t timeout_ns, int *cancel) {
	waiter w = waiter_for(timeout_ns, cancel);
	pthread_mutex_lock(&q->mu);
	int rc = wait_for(q, 0, &w);
	if (rc == PYW_Q_OK) {
		link_chain(q, it, it, 1);
	}
	unlock(q, &w);
	return rc;
}

int pyw_queue_pop_many(pyw_queue *q, pyw_item **out, size_t max, size_t *n, int64_t timeout_ns, int *cancel) {
	waiter w = waiter_for(timeout_ns, cancel);
	*n = 0;
	pthread_mutex_lock(&q->mu);
	int rc = wait_for(q, 1, &w);
	if (rc == PYW_Q_OK) {
		*out = unlink_chain(q, max, n);
	}
	unlock(q, &w);
	return rc;
}

int pyw_queue_push_many(pyw_queue *q, pyw_item **chain, size_t *pushed, int64_t timeout_ns, int *cancel) {
	waiter w = waiter_for(timeout_ns, cancel);
	int rc = PYW_Q_OK;
	*pushed = 0;
	pthread_mutex_lock(&q->mu);
	while (*chain != NULL) {
		rc = wait_for(q, 0, &w);
		if (rc != PYW_Q_OK) {
			break;
		}
		/* move as many as there is room for, in order */
		size_t room = free_slots(q);
		size_t k = 0;
		pyw_item *first = *chain, *last = NULL;
		for (pyw_item *it = first; it != NULL && k < room; it = it->next) {
			last = it;
			k++;
		}
		*chain = last->next;
		link_chain(q, first, last, k);
		*pushed += k;
	}
	unlock(q, &w);
	return rc;
}

/* Links the chain first..last of k items at the head (q->mu held) and wakes receivers. */
static void link_head(pyw_queue *q, pyw_item *first, pyw_item *last, size_t k) {
	last->next = q->head;
	q->head = first;
	if (q->tail == NULL) {
		q->tail = last;
	}
	size_t len = add_len(q, k, +1);
	wake(&q->can_recv, q->recv_waiting, &q->recv_spinning, k, len);
}

void pyw_queue_unget(pyw_queue *q, pyw_item *chain) {
	if (chain == NULL) {
		return;
	}
	pyw_item *last = chain;
	size_t k = 1;
	for (; last->next != NULL; last = last->next) {
		k++;
	}
	pthread_mutex_lock(&q->mu);
	link_head(q, chain, last, k);
	pthread_mutex_unlock(&q->mu);
}

/* A node holding a copy of a small item (q->mu held): one the queue keeps, else a new one (only
 * while the items in flight grow in number: a small malloc under the lock). NULL: no memory. */
static pyw_item *small_node(pyw_queue *q, const char *data, size_t len) {
	pyw_item *it = q->spare;
	if (it != NULL) {
		q->spare = it->next;
		q->nspare--;
	} else if ((it = pyw_item_new(NULL, 0, NULL, 0)) == NULL) {
		return NULL;
	}
	if (len > 0) {
		memcpy(it->data, data, len);
	}
	it->len = len;
	return it;
}

int pyw_queue_unget_small(pyw_queue *q, const char *data, size_t len) {
	pthread_mutex_lock(&q->mu);
	pyw_item *it = small_node(q, data, len); /* as a rule the node recv_copy just gave back */
	if (it != NULL) {
		link_head(q, it, it, 1);
	}
	pthread_mutex_unlock(&q->mu);
	return it != NULL ? PYW_Q_OK : PYW_Q_NOMEM;
}

void pyw_queue_cancel(pyw_queue *q, int *cancel) {
	pthread_mutex_lock(&q->mu);
	__atomic_store_n(cancel, 1, __ATOMIC_RELAXED); /* also read by spinners, without q->mu */
	pthread_cond_broadcast(&q->can_recv);
	pthread_cond_broadcast(&q->can_send);
	pthread_mutex_unlock(&q->mu);
}

int pyw_queue_send(pyw_queue *q, const char *data, size_t len, pyw_shared *const *refs, size_t nrefs,
                   pyw_item **keep, int64_t timeout_ns, int *cancel) {
	if (*keep != NULL || len > PYW_SMALL_ITEM || nrefs > 0) {
		if (*keep == NULL && (*keep = pyw_item_new(data, len, refs, nrefs)) == NULL) {
			return PYW_Q_NOMEM;
		}
		int rc = push(q, *keep, timeout_ns, cancel);
		if (rc == PYW_Q_OK) {
			*keep = NULL;
		}
		return rc;
	}
	waiter w = waiter_for(timeout_ns, cancel);
	pthread_mutex_lock(&q->mu);
	int rc = wait_for(q, 0, &w);
	if (rc == PYW_Q_OK) {
		pyw_item *it = small_node(q, data, len);
		if (it == NULL) {
			rc = PYW_Q_NOMEM;
			/* a pop may have skipped waking a sleeping sender for this slot, counting on this
			 * thread (it spun) to take it: pass it on */
			wake(&q->can_send, q->send_waiting, &q->send_spinning, 1, free_slots(q));
		} else {
			link_chain(q, it, it, 1);
		}
	}
	unlock(q, &w);
	return rc;
}

int pyw_queue_recv_copy(pyw_queue *q, char *small, size_t *len, pyw_item **big, int64_t timeout_ns, int *cancel) {
	waiter w = waiter_for(timeout_ns, cancel);
	pyw_item *drop = NULL;
	*big = NULL;
	*len = 0;
	pthread_mutex_lock(&q->mu);
	int rc = wait_for(q, 1, &w);
	if (rc == PYW_Q_OK) {
		size_t k;
		pyw_item *it = unlink_chain(q, 1, &k);
		if (reusable(it)) {
			memcpy(small, it->data, it->len);
			*len = it->len;
			if (q->nspare < SPARE_MAX) {
				it->len = 0;
				it->next = q->spare;
				q->spare = it;
				q->nspare++;
			} else {
				drop = it;
			}
		} else {
			*big = it;
		}
	}
	unlock(q, &w);
	free(drop);
	return rc;
}
