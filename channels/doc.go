// Package channels moves data between goroutines and Python interpreters through queues
// implemented in C: no pickle, no polling, nothing lost when an interpreter ends.
//
// # Model
//
// A channel is a multi-producer, multi-consumer queue, bounded (Send waits while it is full) or
// unbounded. Items are stored in pyworkers' interpreter-neutral encoding, so an item belongs to
// no interpreter: it outlives the one that sent it, and each is received exactly once. A closed
// channel refuses sends at once and lets receivers drain what is left before they get
// ErrClosed (ChannelClosed in Python). A receive that took an item it cannot hand over (out of
// memory; in Python also sys.modules['pyworkers'] replaced, so that no Buffer can be made)
// raises and puts the item back at the head, for the next receive: code that catches that
// error and receives again in the same state gets it again, and a receiver that already saw the
// channel closed and drained meanwhile has missed it.
//
// Waiting never polls: a waiter spins for a few microseconds (the other side usually answers
// sooner than a sleeping thread can wake) and then sleeps on a condition variable until an item,
// a free slot, close, its timeout, or cancellation arrives. In Go a waiting Send or Recv sleeps
// in C, so it holds an OS thread while it waits: Go ends a process at 10,000 threads
// (debug.SetMaxThreads), so thousands of goroutines should not block on channels at once (let
// a few receive and hand items on through Go channels). A waiter that leaves without what it waited for (interrupted, cancelled, timed out)
// passes its wake-up on to the next waiter. In Python the wait happens with the
// interpreter's GIL released, so the interpreter's other threads run meanwhile, and interrupting
// the task (cancelling its context in Go) wakes it at once: the wait raises KeyboardInterrupt
// once (code that catches it may wait again in its cleanup), and Go code that Python called on
// the interpreter's thread gets ErrInterrupted. An interrupted task takes and sends nothing
// more: an item that arrives together with the interrupt stays in the channel, and a busy
// receiver lets a coming interrupt in before it takes an item, rather than at the check Python
// makes as the receive returns, where the item would be lost with the interrupted frame (as
// KeyboardInterrupt can lose a value in any Python code: only an interrupt that comes in the
// instant of a receive can still do so). A thread that Python code started is not woken so: its wait goes on past the task's
// interrupt. An interpreter ends only after such threads (as Python itself does at exit); when
// CloseContext's deadline interrupts them, their waits end the same way (KeyboardInterrupt,
// ErrInterrupted for Go code they called, the item left in the channel).
//
// # Values
//
// Items are None/nil, bool, integers of any size, floats, str, bytes, tuples, lists and dicts
// with str keys, nested, as in package cpython. Shared buffers (pyworkers.Buffer in Python,
// *cpython.Buffer in Go) travel by reference, not copied; Python bytes of 64 KiB or more are
// copied once into a shared buffer at send and arrive as a read-only memoryview in Python (a
// *cpython.Buffer in Go), so large payloads cost the same whatever their size. Anything else is
// refused with a TypeError in Python or a *cpython.ConversionError in Go, and nothing is sent
// (so is a value whose copy runs out of memory: MemoryError in Python).
//
// # In Python
//
// Importing this package adds to the pyworkers module of every interpreter:
//
//	ch = pyworkers.Channel(id)            # open the channel with this id (made in Go or Python)
//	ch = pyworkers.Channel.create(capacity=0)  # make one (0: unbounded); ch.id tells others where it is
//	ch.send(obj, timeout=None)            # ChannelClosed, TimeoutError (timeout=0: ChannelFull), TypeError
//	ch.send_nowait(obj)                   # ChannelFull
//	obj = ch.recv(timeout=None)           # ChannelClosed once closed and drained, TimeoutError (0: ChannelEmpty)
//	obj = ch.recv_nowait()                # ChannelEmpty
//	n = ch.send_many(items, timeout=None) # in order, one lock per batch; TypeError sends nothing;
//	                                      # stopped part-way, the exception's .sent says how many went
//	objs = ch.recv_many(max=64, timeout=None)  # one or more, as a list
//	ch.close(); len(ch); ch.capacity; ch.closed   # len: items waiting (an empty ch is falsy: test "is None")
//	for obj in ch: ...                    # until closed and drained
//
// A receive that cannot turn an item into a value for want of memory, or because the task's
// interrupt stopped it, leaves the item at the channel's head for the next receive; an item
// that is no valid encoding (only a bug could send one) is dropped with a ValueError in Python,
// an error in Go (recv_many and RecvMany put the items taken with it back, in order).
//
// send_many and recv_many move small items in bulk: about 2 M items/s between two interpreters
// on 2 cores, against 1.2–1.4 M/s one at a time. In Go, Channel.SendMany and RecvMany do the
// same.
//
// # Lifetime
//
// A channel's memory lives while anyone holds it: a Go *Channel (until Channel.Release, or until
// the garbage collector finds it unreachable) or a Python Channel object in some interpreter.
// Close is about the channel's state, not its memory. The queue and its items are C memory,
// which Go's garbage collector neither sees nor counts: a program that makes channels by the
// thousand (one per request, say) should Release each when done, or a heap that does not grow
// may not ask for the collection that would let them go.
package channels
