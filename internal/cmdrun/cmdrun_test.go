package cmdrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/fault"
)

// testTree is a small program: `prog get NAME [--count N]`,
// `prog make --out F`, `prog pick [--a | --b]`, `prog fail`, `prog hook
// --out F` (with a PreRun). fail returns failWith.
func testTree(stderr *bytes.Buffer, failWith error, ran *[]string) *cobra.Command {
	root := &cobra.Command{Use: "prog", Args: cobra.NoArgs, SilenceErrors: true, SilenceUsage: true,
		RunE: func(*cobra.Command, []string) error { return nil }}
	root.SetOut(new(bytes.Buffer))
	root.SetErr(stderr)
	record := func(name string) func(*cobra.Command, []string) error {
		return func(*cobra.Command, []string) error { *ran = append(*ran, name); return nil }
	}
	get := &cobra.Command{Use: "get NAME", Args: cobra.ExactArgs(1), RunE: record("get")}
	get.Flags().Int("count", 1, "how many")
	mk := &cobra.Command{Use: "make", Args: cobra.NoArgs, RunE: record("make")}
	mk.Flags().String("out", "", "output")
	_ = mk.MarkFlagRequired("out")
	pick := &cobra.Command{Use: "pick", Args: cobra.NoArgs, RunE: record("pick")}
	pick.Flags().Bool("a", false, "a")
	pick.Flags().Bool("b", false, "b")
	pick.MarkFlagsMutuallyExclusive("a", "b")
	fail := &cobra.Command{Use: "fail", RunE: func(*cobra.Command, []string) error { return failWith }}
	hook := &cobra.Command{Use: "hook", Args: cobra.NoArgs, RunE: record("hook"),
		PreRun: func(*cobra.Command, []string) { *ran = append(*ran, "prerun") }}
	hook.Flags().String("out", "", "output")
	_ = hook.MarkFlagRequired("out")
	root.AddCommand(get, mk, pick, fail, hook)
	return root
}

// TestExecuteMisuse: every error cobra raises itself is exit 2, printed
// once as "prog: message".
func TestExecuteMisuse(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
		msg  string // in stderr; "" for none
		ran  string // the RunE that ran, if any
	}{
		{"ok", []string{"get", "x"}, exitcode.OK, "", "get"},
		{"nil args is no args", nil, exitcode.OK, "", ""},
		{"help", []string{"get", "--help"}, exitcode.OK, "", ""},
		{"unknown flag", []string{"get", "x", "--bogus"}, exitcode.Usage, "prog: unknown flag: --bogus", ""},
		{"unknown shorthand flag", []string{"get", "x", "-z"}, exitcode.Usage, "prog: unknown shorthand flag: 'z' in -z", ""},
		{"bad flag value", []string{"get", "x", "--count", "lots"}, exitcode.Usage, `prog: invalid argument "lots" for "--count" flag`, ""},
		{"flag without its value", []string{"get", "x", "--count"}, exitcode.Usage, "prog: flag needs an argument: --count", ""},
		{"unknown subcommand", []string{"frob"}, exitcode.Usage, `prog: unknown command "frob" for "prog"`, ""},
		{"too few arguments", []string{"get"}, exitcode.Usage, "prog: accepts 1 arg(s), received 0", ""},
		{"too many arguments", []string{"get", "a", "b"}, exitcode.Usage, "prog: accepts 1 arg(s), received 2", ""},
		{"argument where none is taken", []string{"make", "x", "--out", "f"}, exitcode.Usage, `prog: unknown command "x" for "prog make"`, ""},
		{"missing required flag", []string{"make"}, exitcode.Usage, `prog: required flag(s) "out" not set`, ""},
		{"required flag given", []string{"make", "--out", "f"}, exitcode.OK, "", "make"},
		{"exclusive flags", []string{"pick", "--a", "--b"}, exitcode.Usage,
			"prog: if any flags in the group [a b] are set none of the others can be; [a b] were all set", ""},
		{"PreRun still runs before the required flag check", []string{"hook"}, exitcode.Usage, `prog: required flag(s) "out" not set`, "prerun"},
		{"cobra's completion command", []string{"completion", "bash", "extra"}, exitcode.Usage,
			`prog: unknown command "extra" for "prog completion bash"`, ""},
		{"cobra's completion request without arguments", []string{cobra.ShellCompRequestCmd}, exitcode.Usage,
			"prog: requires at least 1 arg(s), only received 0", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			var ran []string
			root := testTree(&stderr, nil, &ran)
			got := Execute(context.Background(), root, tc.args, nil)
			if got != tc.want {
				t.Errorf("exit %d, want %d; stderr %q", got, tc.want, stderr.String())
			}
			if tc.msg == "" && stderr.Len() > 0 || !strings.HasPrefix(stderr.String(), tc.msg) || strings.Count(stderr.String(), "prog: ") > 1 {
				t.Errorf("stderr %q, want it to start with %q, once", stderr.String(), tc.msg)
			}
			if strings.Join(ran, ",") != tc.ran {
				t.Errorf("ran %q, want %q", ran, tc.ran)
			}
		})
	}
}

// TestExecuteLegacyRoot: a root with subcommands and no Args has cobra
// find the unknown command while looking up the command; that is misuse
// too, and reported for the command cobra stopped at.
func TestExecuteLegacyRoot(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"frob"}, exitcode.Usage},
		{[]string{"frob", "--bogus"}, exitcode.Usage},
		{[]string{"sub"}, exitcode.OK},
		{[]string{}, exitcode.OK},
	} {
		root := &cobra.Command{Use: "legacy", SilenceErrors: true, SilenceUsage: true,
			RunE: func(*cobra.Command, []string) error { return nil }}
		root.AddCommand(&cobra.Command{Use: "sub", RunE: func(*cobra.Command, []string) error { return nil }})
		var gotCmd string
		var gotErr error
		got := Execute(context.Background(), root, tc.args, func(cmd *cobra.Command, err error) {
			gotCmd, gotErr = cmd.Name(), err
		})
		if got != tc.want {
			t.Errorf("%q: exit %d, want %d (%v)", tc.args, got, tc.want, gotErr)
		}
		if tc.want == exitcode.Usage {
			if gotCmd != "legacy" || exitcode.Code(gotErr) != exitcode.Usage || !strings.HasPrefix(gotErr.Error(), `unknown command "frob" for "legacy"`) {
				t.Errorf("%q: report got %s, %v (code %d)", tc.args, gotCmd, gotErr, exitcode.Code(gotErr))
			}
		} else if gotErr != nil {
			t.Errorf("%q: reported %v", tc.args, gotErr)
		}
	}
}

// TestExecuteCodes: a command's error maps to its code: the engine's
// kinds, codes the command line set, and 1 for anything else.
func TestExecuteCodes(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name    string
		err     error
		want    int
		printed bool
	}{
		{"plain error", base, exitcode.Failed, true},
		{"a message like cobra's is not misuse", errors.New(`writing /dev/sdz: invalid argument`), exitcode.Failed, true},
		{"engine failure", fault.New(fault.Failed, "verify failed"), exitcode.Failed, true},
		{"engine misuse", fmt.Errorf("plan: %w", fault.New(fault.Usage, "no image given")), exitcode.Usage, true},
		{"engine root required", fault.New(fault.NeedRoot, "run as root"), exitcode.NeedRoot, true},
		{"engine missing tool", fault.New(fault.MissingTool, "cijoe is not on PATH"), exitcode.MissingTool, true},
		{"engine raced", fault.New(fault.Raced, "target changed"), exitcode.Raced, true},
		{"command line code", exitcode.New(exitcode.NeedRoot, "log in"), exitcode.NeedRoot, true},
		{"command line code outside a kind", exitcode.Wrap(exitcode.Failed, fault.Wrap(fault.Usage, base)), exitcode.Failed, true},
		{"an error is never exit 0", exitcode.Wrap(exitcode.OK, base), exitcode.Failed, true},
		{"reported: not printed", Reported(fault.New(fault.Raced, "shown")), exitcode.Raced, false},
		{"reported inside a code", exitcode.Wrap(exitcode.Failed, Reported(fault.New(fault.Usage, "shown"))), exitcode.Failed, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The default report.
			var stderr bytes.Buffer
			var ran []string
			got := Execute(context.Background(), testTree(&stderr, tc.err, &ran), []string{"fail"}, nil)
			if got != tc.want {
				t.Errorf("exit %d, want %d", got, tc.want)
			}
			wantOut := ""
			if tc.printed {
				wantOut = "prog: " + tc.err.Error() + "\n"
			}
			if stderr.String() != wantOut {
				t.Errorf("stderr %q, want %q", stderr.String(), wantOut)
			}
			// A report of the program's own.
			stderr.Reset()
			var reports []string
			got = Execute(context.Background(), testTree(&stderr, tc.err, &ran), []string{"fail"}, func(cmd *cobra.Command, err error) {
				reports = append(reports, fmt.Sprintf("%s: %v (%d)", cmd.Name(), err, exitcode.Code(err)))
			})
			if got != tc.want || stderr.Len() > 0 {
				t.Errorf("with a report: exit %d, want %d; stderr %q", got, tc.want, stderr.String())
			}
			var wantReports []string
			if tc.printed {
				wantReports = []string{fmt.Sprintf("fail: %v (%d)", tc.err, exitcode.Code(tc.err))}
			}
			if fmt.Sprint(reports) != fmt.Sprint(wantReports) {
				t.Errorf("reports %q, want %q", reports, wantReports)
			}
		})
	}
}

// TestSeeHelp: the hint names the command, the flag error stays in the
// chain and is misuse.
func TestSeeHelp(t *testing.T) {
	var stderr bytes.Buffer
	var ran []string
	root := testTree(&stderr, nil, &ran)
	root.SetFlagErrorFunc(SeeHelp)
	if got := Execute(context.Background(), root, []string{"get", "x", "--bogus"}, nil); got != exitcode.Usage {
		t.Errorf("exit %d, want %d", got, exitcode.Usage)
	}
	if want := "prog: unknown flag: --bogus (see prog get --help)\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}

// TestReported: the mark keeps the message and the chain.
func TestReported(t *testing.T) {
	inner := fault.New(fault.MissingTool, "cijoe is not on PATH")
	err := Reported(inner)
	if err.Error() != inner.Error() || !errors.Is(err, fault.MissingTool) || exitcode.Code(err) != exitcode.MissingTool {
		t.Errorf("Reported(%v) = %v (code %d)", inner, err, exitcode.Code(err))
	}
	if Reported(nil) != nil {
		t.Error("Reported(nil) must stay nil")
	}
}
