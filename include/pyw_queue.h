/*
 * pyw_queue.h — pyworkers' cross-interpreter queues (package channels, channels/queue.c).
 *
 * A queue holds items in the interpreter-neutral wire encoding (pyw_wire.h) plus the table of
 * shared buffers they refer to: an item belongs to no interpreter, so it outlives the one that
 * sent it and is delivered exactly once. Multi-producer, multi-consumer, bounded or not.
 * Blocking waits sleep on condition variables (never poll); callers release the GIL around them.
 * A queue lives while anyone holds a reference: Go *Channel values and Python Channel objects.
 * Nothing here touches Python objects or needs the GIL.
 */
#ifndef PYW_QUEUE_H
#define PYW_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "pyw.h"

/* Outcomes of push/pop. */
#define PYW_Q_OK 0
#define PYW_Q_CLOSED 1      /* push: closed; pop: closed and drained */
#define PYW_Q_FULL 2        /* push without waiting on a full bounded queue */
#define PYW_Q_EMPTY 3       /* pop without waiting on an empty open queue */
#define PYW_Q_TIMEOUT 4     /* the timeout passed */
#define PYW_Q_CANCELLED 5   /* *cancel was set (pyw_queue_cancel) */
#define PYW_Q_INTERRUPTED 6 /* the interpreter's task was interrupted (pyw_wait_interrupted) */
#define PYW_Q_NOMEM 7

/* Special values of timeout_ns (see below). */
#define PYW_Q_FOREVER (-1)
#define PYW_Q_SPIN_ONLY (-2)
#define PYW_Q_NO_SPIN (-3)

typedef struct pyw_item {
	struct pyw_item *next;
	char *data; /* the item's own bytes, right after this header */
	size_t len;
	pyw_refs refs; /* owned references */
} pyw_item;

/* Makes an item of a copy of data, with a reference to each of refs. NULL: out of memory. */
pyw_item *pyw_item_new(const char *data, size_t len, pyw_shared *const *refs, size_t nrefs);
void pyw_item_free(pyw_item *it);
void pyw_item_free_chain(pyw_item *it); /* it and every item after it (linked by next) */

typedef struct pyw_queue pyw_queue;

/* A new queue (capacity 0: unbounded) holding one reference for the caller. */
pyw_queue *pyw_queue_new(size_t capacity);
/* The live queue with this id, with a new reference for the caller; NULL if there is none. */
pyw_queue *pyw_queue_lookup(int64_t id);
void pyw_queue_incref(pyw_queue *q);
void pyw_queue_decref(pyw_queue *q);

int64_t pyw_queue_id(pyw_queue *q);
size_t pyw_queue_capacity(pyw_queue *q);
size_t pyw_queue_len(pyw_queue *q);
int pyw_queue_is_closed(pyw_queue *q);
/* Whether a send without waiting would find q full now (open, no free slot): checked before
 * the value is converted, which a full channel makes wasted work. */
int pyw_queue_full_now(pyw_queue *q);
/* Closes q: senders fail at once, receivers drain what is left and then fail. Returns 1 if this
 * call closed it, 0 if it was closed already. */
int pyw_queue_close(pyw_queue *q);

/* Every push and pop below: timeout_ns > 0 waits up to that many nanoseconds, 0 does not wait,
 * PYW_Q_FOREVER waits as long as needed (spinning a little, then asleep). PYW_Q_SPIN_ONLY waits
 * only as long as it would spin before sleeping (PYW_Q_FULL / PYW_Q_EMPTY then, as for 0), and
 * PYW_Q_NO_SPIN as long as needed but asleep at once: a caller that must set up a cancel flag to
 * sleep spins first without it, and sets it up only when that was not enough. cancel, when not
 * NULL, is a flag set by pyw_queue_cancel to abandon the wait.
 * Bulk versions: one lock acquisition for many items. pop_many waits like recv_copy for the first
 * item, then takes up to max as a chain (linked by next) and sets *n. push_many appends the
 * chain in order, waiting for room as needed (timeout_ns is for the whole call, however many
 * waits it takes); on any outcome it sets *pushed and leaves the items not pushed in *chain,
 * with the caller. */
int pyw_queue_pop_many(pyw_queue *q, pyw_item **out, size_t max, size_t *n, int64_t timeout_ns, int *cancel);
int pyw_queue_push_many(pyw_queue *q, pyw_item **chain, size_t *pushed, int64_t timeout_ns, int *cancel);
/* Puts a chain of items taken from q back at its head, in order, even past its capacity: for a
 * receiver that could not deliver what it took (decoding failed), so that nothing is lost. */
void pyw_queue_unget(pyw_queue *q, pyw_item *chain);
/* The same for a small item received by copy (pyw_queue_recv_copy, no refs): it goes back in a
 * node the queue keeps, so it needs no memory in the common case. PYW_Q_NOMEM when it did and
 * there was none (the item is then lost). */
int pyw_queue_unget_small(pyw_queue *q, const char *data, size_t len);
/* Sets *cancel and wakes q's waiters so that the wait using it returns PYW_Q_CANCELLED. */
void pyw_queue_cancel(pyw_queue *q, int *cancel);

/* Small items (up to PYW_SMALL_ITEM bytes, no shared buffers) are copied into and out of item
 * nodes that the queue keeps for reuse: in a steady stream neither side calls malloc or free,
 * which between two threads contend on the sender's malloc arena. */
#define PYW_SMALL_ITEM 64

/* Sends data (with refs to shared buffers): a small item is copied into a kept node, any other
 * is built into *keep (when *keep is NULL) and pushed. *keep is NULL again on PYW_Q_OK; on any
 * other outcome the built item stays in *keep, so that a sender that tries again (first without
 * waiting, then waiting) builds it once. The caller frees *keep at the end (pyw_item_free). */
int pyw_queue_send(pyw_queue *q, const char *data, size_t len, pyw_shared *const *refs, size_t nrefs,
                   pyw_item **keep, int64_t timeout_ns, int *cancel);
/* Pop that copies a small item into small (PYW_SMALL_ITEM bytes), sets *len and *big = NULL, and
 * keeps its node for reuse; any other item is handed over in *big (the caller frees it). */
int pyw_queue_recv_copy(pyw_queue *q, char *small, size_t *len, pyw_item **big, int64_t timeout_ns, int *cancel);

/* Registers the Channel type and its exceptions in the pyworkers module (channels/pychan.c). */
int pyw_channels_register(void);

#endif
