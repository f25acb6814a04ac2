package channels

// SendRaw exposes sendRaw to the external tests.
func (c *Channel) SendRaw(b []byte) error { return c.sendRaw(b) }

// CallsInProgress is how many calls use the channel's queue now (see Channel.uses).
func (c *Channel) CallsInProgress() int64 { return c.uses.Load() &^ (released | freed) }
