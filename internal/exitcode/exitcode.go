// Package exitcode maps errors to bty's process exit codes, once, at the
// command line's edge: the engine's kinds of failure (internal/fault) and
// the codes the command line packages attach themselves (Wrap, New).
//
// The codes are part of the user contract (docs/reference.md, "Exit
// codes"):
//
//	0 success
//	1 operation failed (plan rejected, write or provisioning failed)
//	2 misuse (bad flag, missing file, missing required flag)
//	3 root required
//	4 required external tool missing
//	5 target raced between validation and write
package exitcode

import (
	"fmt"

	"github.com/btyproject/bty/internal/fault"
)

// The exit codes of every bty command.
const (
	OK          = 0
	Failed      = 1
	Usage       = 2
	NeedRoot    = 3
	MissingTool = 4
	Raced       = 5
)

// Error wraps an error with the exit code the process should end with.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Wrap returns err tagged with code. A nil err stays nil.
func Wrap(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// New formats a message and tags it with code.
func New(code int, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// Code returns the exit code for err: 0 for nil; else the code of the
// outermost *Error or *fault.Error in its chain (a kind maps through
// FromKind); else Failed.
func Code(err error) int {
	if err == nil {
		return OK
	}
	if code, ok := find(err); ok {
		return code
	}
	return Failed
}

// FromKind is the exit code of a kind of failure.
func FromKind(k fault.Kind) int {
	switch k {
	case fault.Usage:
		return Usage
	case fault.NeedRoot:
		return NeedRoot
	case fault.MissingTool:
		return MissingTool
	case fault.Raced:
		return Raced
	}
	return Failed
}

// find walks err's chain in the order errors.As does and returns the
// code of the first *Error or *fault.Error.
func find(err error) (int, bool) {
	switch e := err.(type) {
	case *Error:
		return e.Code, true
	case *fault.Error:
		return FromKind(e.Kind), true
	case interface{ Unwrap() error }:
		if next := e.Unwrap(); next != nil {
			return find(next)
		}
	case interface{ Unwrap() []error }:
		for _, next := range e.Unwrap() {
			if next == nil {
				continue
			}
			if code, ok := find(next); ok {
				return code, true
			}
		}
	}
	return 0, false
}
