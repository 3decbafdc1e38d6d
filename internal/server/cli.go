package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/btyproject/bty/internal/cmdrun"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/store/sqlitestore"
	"github.com/btyproject/bty/internal/version"
)

// Main is bty-web's command line: `bty-web [serve]`, `bty-web passwd`,
// `bty-web backup FILE`, `bty-web check`.
// It returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:   "bty-web",
		Short: "bty's fleet server: HTTP API, iPXE scripts, image serving, TFTP and proxy-DHCP",
		Long: `bty-web serves a fleet: every PXE boot asks GET /pxe/{mac} what to do
(boot the local disk, flash the assigned image, or start the TUI), images
and live-env artifacts are served over HTTP with Range, and operators manage
machines through the authenticated API (bty-ctl) or the browser UI at
http://HOST:PORT/ui (log in with the admin password).

Configuration (environment):
  BTY_STATE_DIR        state directory, holds state.db   (/var/lib/bty)
  BTY_IMAGE_ROOT       images served and uploaded        (/var/lib/bty/images)
  BTY_BOOT_DIR         live-env kernel and initrd        ($BTY_STATE_DIR/boot)
  BTY_WEB_HOST/PORT    listen address                    (0.0.0.0:8080)
  BTY_TFTP_PORT        TFTP for iPXE binaries, 0 = off   (69)
  BTY_IPXE_DIR         where the iPXE binaries are       (/usr/lib/ipxe)
  BTY_PROXYDHCP_IFACE  answer PXE clients on this interface (off)
  BTY_MAX_UPLOAD       largest upload                    (64GiB)
  BTY_SESSION_TTL      login session lifetime            (12h)
  BTY_TLS_CERT/KEY     serve HTTPS with this pair
  BTY_ADMIN_PASSWORD   set the admin password at start
  BTY_LOG_LEVEL        debug, info, warn or error        (info)
  BTY_BACKUP_INTERVAL  backup into $BTY_STATE_DIR/backups, 0 = off (6h)
  BTY_BACKUP_KEEP      automatic backups kept            (8)
  BTY_FLASH_DEADLINE   a flash's time to ready, then timeout (1h)
  BTY_CYCLE_TTL        how long a flash cycle stays open (4h)

BMC passwords are stored sealed with $BTY_STATE_DIR/secret.key (made on
first need): keep it with the backups.

Without BTY_ADMIN_PASSWORD and without a stored password (bty-web passwd),
the first start generates one and prints it once on stderr.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("bty-web {{.Version}}\n")
	serve := newServeCmd(stderr)
	root.AddCommand(serve, newPasswdCmd(stdin, stdout, stderr))
	root.AddCommand(newBackupCmd(stdout, stderr), newCheckCmd(stdout, stderr))
	root.RunE = serve.RunE
	root.Flags().AddFlagSet(serve.Flags())
	return cmdrun.Execute(ctx, root, args, nil)
}

func newLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToLower(os.Getenv("BTY_LOG_LEVEL")) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func newServeCmd(stderr io.Writer) *cobra.Command {
	var host, stateDir, imageRoot string
	var port int
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server (the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := ConfigFromEnv(nil)
			if err != nil {
				return exitcode.Wrap(exitcode.Usage, err)
			}
			f := cmd.Flags()
			if f.Changed("host") {
				cfg.Host = host
			}
			if f.Changed("port") {
				cfg.Port = port
			}
			if f.Changed("state-dir") {
				cfg.StateDir = stateDir
			}
			if f.Changed("image-root") {
				cfg.ImageRoot = imageRoot
			}
			return Run(cmd.Context(), cfg, newLogger(stderr), stderr)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "listen address (overrides BTY_WEB_HOST)")
	cmd.Flags().IntVar(&port, "port", 0, "listen port (overrides BTY_WEB_PORT)")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory (overrides BTY_STATE_DIR)")
	cmd.Flags().StringVar(&imageRoot, "image-root", "", "image directory (overrides BTY_IMAGE_ROOT)")
	return cmd
}

// Run opens the state, prepares the password, and serves until ctx ends.
// A generated admin password is printed on console (never logged).
func Run(ctx context.Context, cfg Config, log *slog.Logger, console io.Writer) error {
	for _, d := range []string{cfg.StateDir, cfg.ImageRoot, cfg.BootDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w; set BTY_STATE_DIR/BTY_IMAGE_ROOT/BTY_BOOT_DIR to writable directories", d, err)
		}
	}
	st, err := sqlitestore.Open(ctx, cfg.DBPath(), log)
	if err != nil {
		return err
	}
	defer st.Close()
	stopBackups := startBackups(ctx, st, cfg.BackupDir(), cfg.BackupInterval, cfg.BackupKeep, log)
	defer stopBackups()
	generated, err := EnsureAdminPassword(ctx, st, cfg.AdminPassword)
	if err != nil {
		return fmt.Errorf("setting up the admin password: %w", err)
	}
	if generated != "" {
		fmt.Fprintf(console, "\n  bty-web: no admin password was set; generated one (shown only now):\n\n      %s\n\n  Log in with it (bty-ctl login); change it with: bty-web passwd\n\n", generated)
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w; set BTY_WEB_PORT (or --port) to a free port", addr, err)
	}
	reg := prometheus.NewRegistry()
	srv := New(cfg, st, log, reg)
	defer srv.Close()
	if err := srv.SealPasswords(ctx); err != nil {
		l.Close()
		return fmt.Errorf("%w (bty-web keeps BMC passwords sealed with %s)", err, filepath.Join(cfg.StateDir, secretKeyFile))
	}
	if err := srv.StartPXEServices(ctx, reg, l.Addr().(*net.TCPAddr).Port); err != nil {
		l.Close()
		return err
	}
	scheme := "http"
	if srv.tls() {
		scheme = "https"
	}
	log.Info("bty-web listening", "url", scheme+"://"+l.Addr().String(), "ui", scheme+"://"+l.Addr().String()+"/ui", "state", cfg.DBPath(),
		"images", cfg.ImageRoot, "boot", cfg.BootDir, "version", version.Version)
	return srv.Serve(ctx, l, 10*time.Second)
}

// Close stops background work (image hashing, PXE services).
func (s *Server) Close() {
	s.catalog.close()
	s.stopPXEServices()
}

func newPasswdCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var fromStdin bool
	var stateDir string
	cmd := &cobra.Command{
		Use:   "passwd",
		Short: "Set the admin password (and log out every session)",
		Long: `Set the admin password stored in the state database (only its argon2id
hash is kept). Every existing session is revoked. A running bty-web
uses the new password at the next login.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := ConfigFromEnv(nil)
			if err != nil {
				return exitcode.Wrap(exitcode.Usage, err)
			}
			if cmd.Flags().Changed("state-dir") {
				cfg.StateDir = stateDir
			}
			pw, err := readNewPassword(stdin, stderr, fromStdin)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := sqlitestore.Open(ctx, cfg.DBPath(), newLogger(stderr))
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := SetAdminPassword(ctx, st, pw)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "admin password updated in %s; %d session(s) revoked\n", cfg.DBPath(), n)
			return nil
		},
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from standard input (first line)")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory (overrides BTY_STATE_DIR)")
	return cmd
}

// minPassword is the shortest admin password accepted.
const minPassword = 8

func readNewPassword(stdin io.Reader, stderr io.Writer, fromStdin bool) (string, error) {
	var pw string
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pw = strings.TrimRight(line, "\r\n")
	} else {
		f, ok := stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return "", exitcode.New(exitcode.Usage, "no terminal to prompt on: use --password-stdin")
		}
		fmt.Fprint(stderr, "New admin password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stderr, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if string(a) != string(b) {
			return "", exitcode.New(exitcode.Usage, "the passwords differ; nothing changed")
		}
		pw = string(a)
	}
	if len(pw) < minPassword {
		return "", exitcode.New(exitcode.Usage, "the password must have at least %d characters; nothing changed", minPassword)
	}
	return pw, nil
}
