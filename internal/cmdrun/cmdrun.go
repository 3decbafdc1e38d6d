// Package cmdrun runs the cobra command tree of a bty program (bty,
// bty-tui, bty-web, bty-ctl, bty-media) and turns its outcome into the
// process exit code, the same way for all of them. The codes are in
// docs/reference.md, "Exit codes".
package cmdrun

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/exitcode"
)

// Execute runs root with args (without the program's name; nil is none)
// and returns the exit code: exitcode.Code of the error, and never 0 for
// an error.
//
// Every error cobra raises itself is misuse (exit 2): an unknown flag, a
// bad flag value, an unknown command, wrong arguments, a missing required
// flag, a broken flag group. Execute marks them where they arise, before
// the run: it wraps every command's flag error function and Args
// validator and checks required flags and flag groups in PreRunE, right
// where cobra would check them.
//
// An error not marked Reported is printed by report (cmd is the command
// that failed, or the one cobra stopped at); a nil report prints it as
// "PROGRAM: error" on root's stderr. Set root's streams before, and
// SilenceErrors and SilenceUsage: the error is printed once, here.
func Execute(ctx context.Context, root *cobra.Command, args []string, report func(cmd *cobra.Command, err error)) int {
	if args == nil {
		// cobra would read os.Args instead.
		args = []string{}
	}
	root.SetArgs(args)
	// cobra adds its help and completion commands during the run; add
	// them now so their arguments are checked like every command's.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd(args...)
	markUsage(root)

	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitcode.OK
	}
	err = cobraUsage(root, args, cmd, err)
	var r *reported
	if !errors.As(err, &r) {
		if report != nil {
			report(cmd, err)
		} else {
			fmt.Fprintf(root.ErrOrStderr(), "%s: %v\n", root.Name(), err)
		}
	}
	code := exitcode.Code(err)
	if code == exitcode.OK {
		code = exitcode.Failed
	}
	return code
}

// Reported marks err as already shown to the user (a --json document, a
// progress stream's failed event, the screen of a TUI), so Execute only
// turns it into an exit code. The message and chain are err's.
func Reported(err error) error {
	if err == nil {
		return nil
	}
	return &reported{err}
}

type reported struct{ err error }

func (r *reported) Error() string { return r.err.Error() }
func (r *reported) Unwrap() error { return r.err }

// SeeHelp is a flag error function (cobra.Command.SetFlagErrorFunc) that
// points at the command's help: "unknown flag: --bogus (see bty flash
// --help)".
func SeeHelp(cmd *cobra.Command, err error) error {
	return fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())
}

// usage marks err as misuse. A nil err stays nil.
func usage(err error) error { return exitcode.Wrap(exitcode.Usage, err) }

// markUsage makes the errors cobra raises for every command in root's
// tree misuse.
func markUsage(root *cobra.Command) {
	var cmds []*cobra.Command
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		cmds = append(cmds, c)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	// A command without its own flag error function inherits its
	// parent's: take every command's before changing any.
	flagErrs := make([]func(*cobra.Command, error) error, len(cmds))
	for i, c := range cmds {
		flagErrs[i] = c.FlagErrorFunc()
	}
	for i, c := range cmds {
		flagErr := flagErrs[i]
		c.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
			return usage(flagErr(cmd, err))
		})
		// A nil Args is cobra's legacy check, done while finding the
		// command; cobraUsage marks its error.
		if validate := c.Args; validate != nil {
			c.Args = func(cmd *cobra.Command, args []string) error {
				return usage(validate(cmd, args))
			}
		}
		// cobra checks required flags and flag groups after PreRunE
		// and returns their errors as they are: check them at the end
		// of PreRunE instead (cobra's own check then passes).
		preRunE, preRun := c.PreRunE, c.PreRun
		c.PreRunE = func(cmd *cobra.Command, args []string) error {
			switch {
			case preRunE != nil:
				if err := preRunE(cmd, args); err != nil {
					return err
				}
			case preRun != nil:
				preRun(cmd, args)
			}
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return usage(err)
			}
			return usage(cmd.ValidateFlagGroups())
		}
	}
}

// cobraUsage marks the errors cobra raises where markUsage cannot reach:
// an unknown command found by cobra's legacy argument check (a root
// with subcommands and no Args), and the arguments of the shell
// completion request command cobra adds during the run.
func cobraUsage(root *cobra.Command, args []string, cmd *cobra.Command, err error) error {
	// Finding the command is deterministic: when it fails now, it is
	// what failed the run.
	if _, _, ferr := root.Find(args); ferr != nil {
		return usage(err)
	}
	// __complete runs nothing that fails; its error is its Args'.
	if cmd != nil && cmd.Name() == cobra.ShellCompRequestCmd {
		return usage(err)
	}
	return err
}
