// Package ctl implements bty-ctl, the command line client of a remote
// bty-web: sessions, machines, images, live-env artifacts and settings.
// Run is the whole program; cmd/bty-ctl/main.go only wires signals and
// the exit code, so tests drive it in-process exactly as a user would.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/cmdrun"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/version"
)

// DefaultServer is used when neither --server nor BTY_SERVER is set.
const DefaultServer = "http://localhost:8080"

// AuthRequired is bty-ctl's exit code 3: not logged in, the session was
// rejected (expired, revoked), or login refused the password. bty uses
// 3 for "root required"; bty-ctl never needs root.
const AuthRequired = exitcode.NeedRoot

const exitCodesHelp = `Exit codes: 0 success; 1 failed (the server refused, or it could not be
reached); 2 misuse (bad flag or argument, missing file); 3 authentication
required (not logged in, session expired or revoked, wrong password).`

// env bundles what every subcommand needs from the outside world.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	// stderrTTY: draw a live progress bar; width is the terminal's.
	stderrTTY bool
	width     int

	// Global flags.
	server string
	asJSON bool
}

// Run executes bty-ctl with args (without the program name) and returns
// the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(ctx, args, stdin, stdout, stderr, os.Getenv)
}

// run is Run with the environment injected, so tests can run in parallel
// with their own BTY_SERVER and XDG_CONFIG_HOME.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, now: time.Now, width: 80}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		e.stderrTTY = true
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			e.width = w
		}
	}
	root := newRoot(e)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return cmdrun.Execute(ctx, root, args, func(cmd *cobra.Command, err error) {
		// Errors raised before a command ran (flags, arguments) still
		// get their --json document when --json was asked for.
		if e.asJSON || hasJSONFlag(args) {
			_ = jsonError(e, commandName(cmd), err, nil)
			return
		}
		fmt.Fprintf(stderr, "bty-ctl: %v\n", err)
	})
}

func hasJSONFlag(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// commandName is the --json "command" of cmd: its path without the
// program, words joined by '-' ("machines-set"); "bty-ctl" for the root.
func commandName(cmd *cobra.Command) string {
	if cmd == nil || !cmd.HasParent() {
		return "bty-ctl"
	}
	path := strings.Fields(cmd.CommandPath())
	return strings.Join(path[1:], "-")
}

func newRoot(e *env) *cobra.Command {
	var showVersion bool
	root := &cobra.Command{
		Use:   "bty-ctl",
		Short: "Manage a remote bty-web server: machines, images, live-env artifacts, settings",
		Long: `bty-ctl talks to a bty-web server over its HTTP API: log in once, then
register machines and set their boot policy, upload images and live-env
artifacts, and change the proxy-DHCP setting.

The server is --server URL, else $BTY_SERVER, else ` + DefaultServer + `.
The session token from "bty-ctl login" is kept in
$XDG_CONFIG_HOME/bty/token (default ~/.config/bty/token, mode 0600) and is
only ever sent to the server it was issued by; $BTY_TOKEN, when set, is
used instead of the file.

Every command takes --json and then prints exactly one JSON document on
stdout: {"schema_version": "1", "command": "<name>", ...}; a failure is
{"ok": false, "error": "...", "exit_code": N}.`,
		Example: `  bty-ctl --server http://pxe.lab:8080 login
  bty-ctl machines list
  bty-ctl machines set AA-BB-CC-DD-EE-FF --image debian-12.img.zst --policy flash
  bty-ctl images upload ./debian-12.img.zst --checksum
  bty-ctl logout`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				if e.asJSON {
					return writeJSON(e, "version", map[string]any{"version": version.Version, "build": version.String()})
				}
				fmt.Fprintf(e.stdout, "bty-ctl %s\n", version.String())
				return nil
			}
			return cmd.Help()
		},
	}
	root.Flags().BoolVar(&showVersion, "version", false, "print the version and exit")
	pf := root.PersistentFlags()
	pf.StringVar(&e.server, "server", "", "bty-web base URL (default $BTY_SERVER, else "+DefaultServer+")")
	pf.BoolVar(&e.asJSON, "json", false, "print one JSON document on stdout")
	root.AddCommand(newLoginCmd(e), newLogoutCmd(e), newMachinesCmd(e), newImagesCmd(e), newBootCmd(e), newWorkflowsCmd(e), newSettingsCmd(e),
		newSchedulesCmd(e), newRolloutCmd(e))
	root.SetFlagErrorFunc(cmdrun.SeeHelp)
	// Every command's help ends with the exit codes.
	root.SetHelpTemplate(root.HelpTemplate() + "\n" + exitCodesHelp + "\n")
	return root
}

// groupCmd is a command that only holds subcommands: run bare, it shows
// its help and is misuse.
func groupCmd(e *env, use, short, long string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErr("unknown command %q for %q (see %s --help)", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			if !e.asJSON {
				// Misuse: the help goes where errors go.
				cmd.SetOut(e.stderr)
				_ = cmd.Help()
			}
			var names []string
			for _, s := range cmd.Commands() {
				names = append(names, s.Name())
			}
			return usageErr("choose a subcommand: %s %s", cmd.CommandPath(), strings.Join(names, "|"))
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

// serverURL is the server to talk to: --server, $BTY_SERVER, the default.
func (e *env) serverURL() (string, error) {
	s, from := e.server, "--server"
	if s == "" {
		s, from = e.getenv("BTY_SERVER"), "BTY_SERVER"
	}
	if s == "" {
		s, from = DefaultServer, ""
	}
	u, err := client.NormalizeServer(s)
	if err != nil {
		if from != "" {
			err = fmt.Errorf("%s: %w", from, err)
		}
		return "", exitcode.Wrap(exitcode.Usage, err)
	}
	return u, nil
}

// anonClient is a client without a session (open routes, login).
func (e *env) anonClient() (*client.Client, error) {
	u, err := e.serverURL()
	if err != nil {
		return nil, err
	}
	c, err := client.New(u)
	if err != nil {
		return nil, exitcode.Wrap(exitcode.Usage, err)
	}
	c.UserAgent = "bty-ctl/" + version.Version
	return c, nil
}

// authClient is a client carrying the saved session for the server.
func (e *env) authClient() (*client.Client, error) {
	c, err := e.anonClient()
	if err != nil {
		return nil, err
	}
	tok, err := e.loadToken(c.Server(), false)
	if err != nil {
		return nil, err
	}
	c.SetToken(tok)
	return c, nil
}

// apiErr turns a client error into bty-ctl's: what was being done, the
// server's message, and the exit code (401 is AuthRequired, with the
// way out).
func (e *env) apiErr(what string, c *client.Client, err error) error {
	if err == nil {
		return nil
	}
	var ce *client.ConnError
	switch {
	case client.IsUnauthorized(err):
		return exitcode.Wrap(AuthRequired, fmt.Errorf("%s: %w; run: bty-ctl%s login", what, err, serverHint(c.Server())))
	case errors.As(err, &ce):
		return exitcode.Wrap(exitcode.Failed, fmt.Errorf("%s: %w; is bty-web running there? (set --server or BTY_SERVER)", what, err))
	}
	return exitcode.Wrap(exitcode.Failed, fmt.Errorf("%s: %w", what, err))
}

func usageErr(format string, args ...any) error {
	return exitcode.Wrap(exitcode.Usage, fmt.Errorf(format, args...))
}
