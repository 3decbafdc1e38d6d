package ctl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/exitcode"
)

func newLoginCmd(e *env) *cobra.Command {
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in to bty-web and save the session token",
		Long: `Log in with the admin password of bty-web (set with BTY_ADMIN_PASSWORD or
"bty-web passwd", or printed once by its first start). The password is
read from the terminal without echo, or from stdin with --password-stdin.

The session token is saved in $XDG_CONFIG_HOME/bty/token (default
~/.config/bty/token; directory 0700, file 0600) together with the server
it belongs to, replacing any earlier session. It is valid until it
expires (bty-web's BTY_SESSION_TTL, 12 h by default) or until
"bty-ctl logout".

A wrong password is exit 3; too many attempts from one address are
refused for a while (exit 1).`,
		Example: `  bty-ctl --server http://pxe.lab:8080 login
  printf '%s\n' "$BTY_ADMIN_PASSWORD" | bty-ctl login --password-stdin
  bty-ctl login --password-stdin --json < password.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.anonClient()
			if err != nil {
				return e.fail("login", err, nil)
			}
			pw, err := e.readPassword(fromStdin, c.Server())
			if err != nil {
				return e.fail("login", err, map[string]any{"server": c.Server()})
			}
			s, err := c.Login(cmd.Context(), pw)
			if err != nil {
				if client.IsUnauthorized(err) {
					err = exitcode.Wrap(AuthRequired, fmt.Errorf("login to %s refused: %w", c.Server(), err))
				} else {
					err = e.apiErr("logging in to "+c.Server(), c, err)
				}
				return e.fail("login", err, map[string]any{"server": c.Server()})
			}
			path, err := e.saveToken(session{Server: c.Server(), Token: s.Token, ExpiresAt: s.ExpiresAt})
			if err != nil {
				// The session is useless unsaved: revoke it.
				_ = c.Logout(cmd.Context())
				return e.fail("login", err, map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, "login", map[string]any{"ok": true, "server": c.Server(),
					"expires_at": s.ExpiresAt, "token_file": path})
			}
			fmt.Fprintf(e.stdout, "logged in to %s until %s; token saved in %s\n", c.Server(), localTime(&s.ExpiresAt), path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from stdin (one line; the trailing newline is dropped)")
	return cmd
}

// readPassword reads the password from stdin (--password-stdin) or the
// terminal, without echo.
func (e *env) readPassword(fromStdin bool, server string) (string, error) {
	if fromStdin {
		b, err := io.ReadAll(io.LimitReader(e.stdin, 64<<10))
		if err != nil {
			return "", fmt.Errorf("reading the password from stdin: %w", err)
		}
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[:i]
		}
		b = bytes.TrimSuffix(b, []byte{'\r'})
		if len(b) == 0 {
			return "", usageErr("--password-stdin: stdin held no password")
		}
		return string(b), nil
	}
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usageErr("stdin is not a terminal, so the password cannot be prompted for: pipe it in with --password-stdin")
	}
	fmt.Fprintf(e.stderr, "Password for %s: ", server)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	if len(b) == 0 {
		return "", usageErr("empty password")
	}
	return string(b), nil
}

func newLogoutCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "Revoke the session on the server and delete the token file",
		Long: `Revoke the saved session token on bty-web and delete the token file.

Without a saved session there is nothing to do (exit 0). A session the
server no longer knows (expired, revoked) is simply forgotten. When the
server cannot be reached the token file is kept (exit 1), so the token
can still be revoked later; delete the file by hand to forget it anyway.
With $BTY_TOKEN set, that token is revoked and the file is left alone.`,
		Example: `  bty-ctl logout
  bty-ctl --server http://pxe.lab:8080 logout --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.anonClient()
			if err != nil {
				return e.fail("logout", err, nil)
			}
			extra := map[string]any{"server": c.Server()}
			done := func(revoked bool, note string) error {
				if e.asJSON {
					return writeJSON(e, "logout", map[string]any{"ok": true, "server": c.Server(), "revoked": revoked, "note": note})
				}
				fmt.Fprintln(e.stdout, note)
				return nil
			}
			fromEnv := e.getenv("BTY_TOKEN") != ""
			var path string
			if fromEnv {
				c.SetToken(e.getenv("BTY_TOKEN"))
			} else {
				s, p, err := e.readSession(true)
				path = p
				switch {
				case errors.Is(err, errNoSession):
					return done(false, "not logged in: nothing to do")
				case err != nil:
					return e.fail("logout", err, extra)
				case s.Server != c.Server():
					return e.fail("logout", exitcode.Wrap(AuthRequired, fmt.Errorf(
						"not logged in to %s: the saved session is for %s; run: bty-ctl --server %s logout",
						c.Server(), s.Server, s.Server)), extra)
				}
				c.SetToken(s.Token)
				if !s.ExpiresAt.IsZero() && !e.now().Before(s.ExpiresAt) {
					if err := removeToken(path); err != nil {
						return e.fail("logout", err, extra)
					}
					return done(false, "the session had expired; removed "+path)
				}
			}
			err = c.Logout(cmd.Context())
			revoked := err == nil
			if err != nil && !client.IsUnauthorized(err) {
				return e.fail("logout", e.apiErr("logging out of "+c.Server()+" (the token is kept)", c, err), extra)
			}
			note := "logged out of " + c.Server()
			if !revoked {
				note = "the server no longer knew the session"
			}
			if !fromEnv {
				if err := removeToken(path); err != nil {
					return e.fail("logout", err, extra)
				}
				note += "; removed " + path
			}
			return done(revoked, note)
		},
	}
	return cmd
}

func removeToken(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the token file: %w", err)
	}
	return nil
}
