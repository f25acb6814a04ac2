package cpython

// WriterLocks is how many writers have an output lock now (one per writer in use).
func WriterLocks() int {
	writerLocksMu.Lock()
	defer writerLocksMu.Unlock()
	return len(writerLocks)
}
