package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/cmdrun"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/version"
)

// DefaultImageRoot is where images live when neither --image-root nor
// BTY_IMAGE_ROOT says otherwise.
const DefaultImageRoot = "/var/lib/bty/images"

type options struct {
	imageRoot, server, mac, cycle, jsonEvents, logFile, rebootCmd string
}

// Main runs bty-tui with args and returns the exit code: 0, 1 when the
// last flash failed, 2 for misuse.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o options
	cmd := &cobra.Command{
		Use:   "bty-tui",
		Short: "Flash an image onto a disk from a terminal or serial console",
		Long: `bty-tui walks through a flash: choose an image, choose the target disk
(disks that are mounted, hold the running system or are read-only are shown
but cannot be chosen), choose provisioning (none, cloud-init with a
user-data file, or a cijoe workflow), confirm by typing yes, then watch the
progress and see the result. It uses the same engine as bty flash.

Local mode lists the image root (--image-root, else $BTY_IMAGE_ROOT, else
` + DefaultImageRoot + `). With --server URL it lists a bty-web server's
images and streams the chosen one straight to the disk; with --mac it then
tells the server the machine is flashed (POST /pxe/MAC/done), with --cycle
the flash cycle's token bty-web put on the live env's kernel command line
(bty.cycle=), without which the server refuses the report.

Keyboard only: arrows or j/k move, enter chooses, esc or q goes back, the
bottom line lists the keys. Ctrl-C during a flash asks before aborting.
Works in 80x24 on a serial console (TERM=vt100, NO_COLOR=1: plain ASCII).
Logs go to --log-file, never over the screen. Needs root to write disks.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, stdin, stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.imageRoot, "image-root", "", "directory of images for local mode (default $BTY_IMAGE_ROOT or "+DefaultImageRoot+")")
	f.StringVar(&o.server, "server", "", "bty-web URL: list and stream its images instead of local ones")
	f.StringVar(&o.mac, "mac", "", "with --server: report a successful flash for this MAC (POST /pxe/MAC/done)")
	f.StringVar(&o.cycle, "cycle", "", "with --mac: the flash cycle token to send with the done report (bty.cycle= of the live env's boot script)")
	f.StringVar(&o.jsonEvents, "json-events", "", "also write the engine's events to FILE as JSON lines")
	f.StringVar(&o.logFile, "log-file", "", "log file (default $BTY_LOG_DIR/bty-tui.log, else /var/log/bty/bty-tui.log, else in the temp dir)")
	f.StringVar(&o.rebootCmd, "reboot-command", "", "run this shell command instead of rebooting (testing)")
	_ = f.MarkHidden("reboot-command")
	cmd.SetIn(stdin)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	return cmdrun.Execute(ctx, cmd, args, nil)
}

func run(ctx context.Context, o options, stdin io.Reader, stdout io.Writer) error {
	var cfg Config
	if o.mac != "" {
		if o.server == "" {
			return exitcode.New(exitcode.Usage, "--mac needs --server: the done report goes to a bty-web server")
		}
		mac, err := fleet.ParseMAC(o.mac)
		if err != nil {
			return exitcode.Wrap(exitcode.Usage, fmt.Errorf("--mac: %w", err))
		}
		cfg.MAC = mac
	}
	if o.cycle != "" && !fleet.ValidCycleToken(o.cycle) {
		return exitcode.Wrap(exitcode.Usage, fmt.Errorf("--cycle: want the %d hex digits of bty.cycle= on the live env's kernel command line", fleet.CycleTokenLen))
	}
	if o.server != "" {
		if o.imageRoot != "" {
			return exitcode.New(exitcode.Usage, "--image-root and --server exclude each other: the images come from one place")
		}
		c, err := client.New(o.server)
		if err != nil {
			return exitcode.Wrap(exitcode.Usage, fmt.Errorf("--server: %w", err))
		}
		c.UserAgent = "bty-tui/" + version.Version
		cfg.Catalog = RemoteCatalog{Client: c}
		cfg.Done = func(ctx context.Context, mac fleet.MAC, totals fleet.Progress) error {
			return c.PXEDone(ctx, mac, o.cycle, totals)
		}
		cfg.UploadRun = func(ctx context.Context, mac fleet.MAC, workflow string, exit int, log []byte) error {
			return c.PXEUploadRun(ctx, mac, o.cycle, workflow, exit, log)
		}
	} else {
		root := o.imageRoot
		if root == "" {
			root = os.Getenv("BTY_IMAGE_ROOT")
		}
		if root == "" {
			root = DefaultImageRoot
		}
		cfg.Catalog = LocalCatalog{Root: root}
	}
	in, inOK := stdin.(*os.File)
	out, outOK := stdout.(*os.File)
	if !inOK || !outOK || !term.IsTerminal(int(in.Fd())) || !term.IsTerminal(int(out.Fd())) {
		return exitcode.New(exitcode.Usage, "bty-tui needs a terminal on stdin and stdout; for scripts use bty flash")
	}

	logPath, logF, err := openLog(o.logFile)
	if err != nil {
		return exitcode.Wrap(exitcode.Usage, err)
	}
	defer logF.Close()
	cfg.LogPath = logPath
	cfg.Logger = slog.New(slog.NewTextHandler(logF, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Logger.Info("bty-tui starting", "version", version.Version, "catalog", cfg.Catalog.Describe(), "mac", cfg.MAC)

	if o.jsonEvents != "" {
		jf, err := os.OpenFile(o.jsonEvents, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return exitcode.Wrap(exitcode.Usage, fmt.Errorf("--json-events: %w", err))
		}
		defer jf.Close()
		cfg.Events = event.NewNDJSON(jf)
	}
	cfg.Reboot = reboot
	if o.rebootCmd != "" {
		cmdline := o.rebootCmd
		cfg.Reboot = func() error {
			out, err := exec.Command("/bin/sh", "-c", cmdline).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %v: %s", cmdline, err, out)
			}
			return nil
		}
	}

	p := tea.NewProgram(New(ctx, cfg), tea.WithAltScreen(), tea.WithInput(in), tea.WithOutput(out), tea.WithContext(ctx))
	final, err := p.Run()
	if err != nil && !errors.Is(err, tea.ErrProgramKilled) {
		return fmt.Errorf("terminal UI: %w", err)
	}
	if m, ok := final.(Model); ok {
		if ran, ferr := m.Result(); ran && ferr != nil {
			// The screen said so.
			return exitcode.Wrap(exitcode.Failed, cmdrun.Reported(ferr))
		}
	}
	cfg.Logger.Info("bty-tui finished")
	return nil
}

// openLog opens the log file: the flag, else $BTY_LOG_DIR, else
// /var/log/bty, else the temp dir.
func openLog(path string) (string, *os.File, error) {
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return "", nil, fmt.Errorf("--log-file: %w", err)
		}
		return path, f, nil
	}
	var dirs []string
	if d := os.Getenv("BTY_LOG_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, "/var/log/bty", os.TempDir())
	var last error
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			last = err
			continue
		}
		p := filepath.Join(d, "bty-tui.log")
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err == nil {
			return p, f, nil
		}
		last = err
	}
	return "", nil, fmt.Errorf("no writable log file (tried %v): %w; pass --log-file FILE", dirs, last)
}
