// Package exitcode carries bty's process exit codes from deep inside the
// engine to the CLI boundary.
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
	"errors"
	"fmt"
	"strings"
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

// Code returns the exit code for err: 0 for nil, the code of the outermost
// *Error in its chain, else Failed.
func Code(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Failed
}

// IsCobraUsage recognises the argument and flag errors cobra raises
// itself (it has no typed errors for them): they are misuse, exit 2.
func IsCobraUsage(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag",
		"flag needs an argument", "invalid argument", "accepts ", "requires at least",
		"requires exactly", "required flag", "if any flags in the group", "none of the others can be"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
