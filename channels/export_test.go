package channels

// SendRaw exposes sendRaw to the external tests.
func (c *Channel) SendRaw(b []byte) error { return c.sendRaw(b) }
