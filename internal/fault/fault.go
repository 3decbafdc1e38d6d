// Package fault says what kind of failure an error is, so the engine can
// report it without knowing about processes: the command line maps a kind
// to an exit code once, at its edge (internal/exitcode; the codes are in
// docs/reference.md, "Exit codes").
//
// A Kind is itself an error, so callers test for one with errors.Is:
//
//	if errors.Is(err, fault.Usage) { ... }
//
// and KindOf gives the kind that decides when several are in a chain.
package fault

import (
	"errors"
	"fmt"
)

// Kind is what sort of failure an error is.
type Kind uint8

// The kinds of failure. Failed is the zero Kind and what any error
// without a kind is.
const (
	// Failed: the operation was tried and did not work.
	Failed Kind = iota
	// Usage: misuse; the user must change the command (a bad flag or
	// argument, a missing or unreadable input file).
	Usage
	// NeedRoot: the operation needs root.
	NeedRoot
	// MissingTool: an external program the operation needs is not
	// installed.
	MissingTool
	// Raced: the target changed between its check and the write.
	Raced
)

var kindNames = [...]string{
	Failed:      "failed",
	Usage:       "misuse",
	NeedRoot:    "root required",
	MissingTool: "required tool missing",
	Raced:       "target changed",
}

// String names the kind.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("fault.Kind(%d)", k)
}

// Error makes a Kind usable as the target of errors.Is.
func (k Kind) Error() string { return k.String() }

// Error is an error of a known kind. Its message is Err's.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's kind: errors.Is(err, fault.Usage).
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

// Wrap returns err marked as kind. A nil err stays nil.
func Wrap(kind Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: kind, Err: err}
}

// New formats a message (fmt.Errorf, so %w works) and marks it as kind.
func New(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the kind of err: that of the outermost *Error in its
// chain (the last word on what went wrong), else Failed. A nil err is
// Failed too; test err for nil first.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Failed
}
