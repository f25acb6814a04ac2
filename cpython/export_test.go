package cpython

import "context"

// WriterLocks is how many writers have an output lock now (one per writer in use).
func WriterLocks() int {
	writerLocksMu.Lock()
	defer writerLocksMu.Unlock()
	return len(writerLocks)
}

// LifecycleTurns is how many interpreters may be created or ended at once.
func LifecycleTurns() int { return cap(lifecycle) }

// ArgBufCap is the capacity of the buffer i keeps for encoding calls' arguments.
func ArgBufCap(i *Interpreter) (n int) {
	i.Do(context.Background(), func(*Thread) error { n = cap(i.argBuf); return nil })
	return n
}

// LastTaskID is the number of the task begun last in this process.
func LastTaskID() uint64 { return taskIDs.Load() }

// InterruptTask interrupts task on i as a watch of its context would (late, say).
func InterruptTask(i *Interpreter, task uint64) bool { return i.interrupt(task) }
