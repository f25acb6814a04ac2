//go:build !pydebug

package main_test

var pydebugTag []string
