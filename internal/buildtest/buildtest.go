// Package buildtest compiles Go programs for tests that run them as a
// user would: bty's own commands, static (CGO_ENABLED=0) as they ship,
// and small helper programs such as a test guest's /init.
package buildtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Options tune one build. The zero value builds in the test's package
// directory for the host.
type Options struct {
	// Dir is where go build runs and pkg is resolved; "" is the current
	// directory (a test's package directory).
	Dir string
	// Env is added to the environment after CGO_ENABLED=0, e.g.
	// GOOS=linux, GOARCH=amd64, GOFLAGS=.
	Env []string
	// Flags are more go build flags: -trimpath, -ldflags=-s -w.
	Flags []string
}

// Build compiles the main package pkg (as go build takes it, relative to
// o.Dir) into the file out. The error carries go build's output.
func Build(out, pkg string, o Options) error {
	args := append(append([]string{"build"}, o.Flags...), "-o", out, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = o.Dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), o.Env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Program builds pkg into a new temporary directory of t and returns the
// binary's path, named after pkg's last element (bty-web for
// ../../cmd/bty-web, so pkg must end in the program's name). It fails t
// when go build fails.
func Program(t testing.TB, pkg string, o Options) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if err := Build(out, pkg, o); err != nil {
		t.Fatal(err)
	}
	return out
}

// Result is what a program run by Run did.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Run runs cmd to its end as a test does a user's command line: its
// output captured, its exit status as Code. It fails t when cmd cannot
// start or when the program panicked (a stack trace is never an answer
// to bad input).
func Run(t testing.TB, cmd *exec.Cmd) Result {
	t.Helper()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s: %v", cmd.Path, err)
	}
	if s := errb.String(); strings.Contains(s, "panic:") || strings.Contains(s, "goroutine ") {
		t.Fatalf("%s panicked:\n%s", cmd.Path, s)
	}
	return Result{Code: code, Stdout: out.String(), Stderr: errb.String()}
}
