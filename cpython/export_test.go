package cpython

// WriterLocks is how many writers have an output lock now (one per writer in use).
func WriterLocks() int {
	writerLocksMu.Lock()
	defer writerLocksMu.Unlock()
	return len(writerLocks)
}

// LifecycleTurns is how many interpreters may be created or ended at once.
func LifecycleTurns() int { return cap(lifecycle) }
