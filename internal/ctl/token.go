package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/exitcode"
)

// session is what the token file holds: the token and the server that
// issued it, so it is never sent anywhere else.
type session struct {
	Server    string    `json:"server"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// tokenPath is $XDG_CONFIG_HOME/bty/token, else $HOME/.config/bty/token.
func (e *env) tokenPath() (string, error) {
	if x := e.getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "bty", "token"), nil
	}
	home := e.getenv("HOME")
	if home == "" {
		return "", usageErr("neither XDG_CONFIG_HOME nor HOME is set: set one so bty-ctl knows where to keep its session token")
	}
	return filepath.Join(home, ".config", "bty", "token"), nil
}

// saveToken writes the session to the token file atomically: directory
// 0700, file 0600.
func (e *env) saveToken(s session) (string, error) {
	path, err := e.tokenPath()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s for the session token: %w", dir, err)
	}
	// An existing directory that others can enter is tightened: the
	// token is a password.
	if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return "", fmt.Errorf("making %s private (chmod 700): %w", dir, err)
		}
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".token-*") // mode 0600
	if err != nil {
		return "", fmt.Errorf("saving the session token in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("saving the session token: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("saving the session token: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("saving the session token: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("saving the session token: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("saving the session token as %s: %w", path, err)
	}
	return path, nil
}

// errNoSession: there is no token file.
var errNoSession = errors.New("no saved session")

// readSession reads the token file. An insecure file (group or others
// may read it) is refused unless lenient, which only warns (logout: the
// token should be revoked all the more).
func (e *env) readSession(lenient bool) (session, string, error) {
	path, err := e.tokenPath()
	if err != nil {
		return session{}, "", err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return session{}, path, errNoSession
	}
	if err != nil {
		return session{}, path, fmt.Errorf("reading the session token: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return session{}, path, fmt.Errorf("reading the session token: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		msg := fmt.Sprintf("the token file %s can be read by others (mode %04o)", path, perm)
		if !lenient {
			return session{}, path, exitcode.Wrap(AuthRequired, fmt.Errorf(
				"%s: refusing to use it; run: chmod 600 %s (or bty-ctl logout, then log in again)", msg, path))
		}
		fmt.Fprintf(e.stderr, "bty-ctl: warning: %s\n", msg)
	}
	var s session
	dec := json.NewDecoder(f)
	if err := dec.Decode(&s); err != nil || s.Token == "" || s.Server == "" {
		return session{}, path, exitcode.Wrap(AuthRequired, fmt.Errorf(
			"the token file %s is not a bty-ctl session: remove it and run bty-ctl login", path))
	}
	return s, path, nil
}

// loadToken returns the token to send to server: $BTY_TOKEN, else the
// saved session when it was issued by server and has not expired.
func (e *env) loadToken(server string, lenient bool) (string, error) {
	if t := strings.TrimSpace(e.getenv("BTY_TOKEN")); t != "" {
		return t, nil
	}
	s, path, err := e.readSession(lenient)
	if errors.Is(err, errNoSession) {
		return "", exitcode.Wrap(AuthRequired, fmt.Errorf("not logged in to %s (no %s): run: bty-ctl%s login",
			server, path, serverHint(server)))
	}
	if err != nil {
		return "", err
	}
	if s.Server != server {
		return "", exitcode.Wrap(AuthRequired, fmt.Errorf(
			"not logged in to %s: the saved session is for %s; pass --server %s, or run: bty-ctl --server %s login",
			server, s.Server, s.Server, server))
	}
	if !s.ExpiresAt.IsZero() && !e.now().Before(s.ExpiresAt) {
		return "", exitcode.Wrap(AuthRequired, fmt.Errorf("the session for %s expired at %s: run: bty-ctl%s login",
			server, localTime(&s.ExpiresAt), serverHint(server)))
	}
	return s.Token, nil
}

func serverHint(server string) string {
	if server == DefaultServer {
		return ""
	}
	return " --server " + server
}
