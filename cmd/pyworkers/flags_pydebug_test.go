//go:build pydebug

package main_test

// The binary under test links the same CPython build as the test itself.
var pydebugTag = []string{"-tags", "pydebug"}
