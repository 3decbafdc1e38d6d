package media

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/cmdrun"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/version"
)

// cliEnv is what every subcommand shares.
type cliEnv struct {
	stdout, stderr io.Writer
	level          *slog.LevelVar
	log            *slog.Logger

	cacheDir, binDir, kernelDeb string
	verbose, quiet              bool
}

// Run executes bty-media with args (without the program name) and returns
// the process exit code. cmd/bty-media only wires signals and the code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &cliEnv{stdout: stdout, stderr: stderr, level: new(slog.LevelVar)}
	e.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: e.level}))
	root := newRoot(e)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return cmdrun.Execute(ctx, root, args, nil)
}

const rootLong = `bty-media builds the bty live environment: a Linux kernel (Debian's) and
an initramfs holding bty, bty-tui and busybox, which boots a machine into
bty with nothing on its disks. Three outputs:

  netboot   the kernel and initrd a bty-web server hands to PXE clients
  usb       a disk image for a USB stick: boots the live env, carries images
  server    a disk image for a bty appliance: bty-web plus the netboot files

The static programs come from --bin-dir (default: the directory bty-media
runs from, which is bin/ after 'make build'). The kernel, busybox,
systemd-boot, SYSLINUX and iPXE are Debian packages fetched with apt-get download
and unpacked with dpkg-deb (nothing is installed) into --cache (default
$XDG_CACHE_HOME/bty-media or ~/.cache/bty-media), and reused from there;
delete the cache any time to reclaim its space.

Needs: apt-get and dpkg-deb (all), mkfs.vfat and mtools (usb, server),
mkfs.exfat (usb, package exfatprogs), mkfs.ext4 (server, e2fsprogs). A
missing one is exit code 4 with the apt-get install line. Nothing is
mounted and no root is needed, except for apt-get update when the package
lists are missing or stale.

Exit codes: 0 success, 1 failed, 2 misuse, 4 required tool missing.`

func newRoot(e *cliEnv) *cobra.Command {
	var showVersion bool
	root := &cobra.Command{
		Use:           "bty-media",
		Short:         "Build bty's live environment: netboot files, USB stick and server disk images",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			switch {
			case e.verbose:
				e.level.Set(slog.LevelDebug)
			case e.quiet:
				e.level.Set(slog.LevelWarn)
			}
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				fmt.Fprintf(e.stdout, "bty-media %s\n", version.String())
				return nil
			}
			return cmd.Help()
		},
	}
	root.Flags().BoolVar(&showVersion, "version", false, "print the version and exit")
	pf := root.PersistentFlags()
	pf.StringVar(&e.cacheDir, "cache", "", "download cache `DIR` (default $XDG_CACHE_HOME/bty-media or ~/.cache/bty-media)")
	pf.StringVar(&e.binDir, "bin-dir", "", "`DIR` holding static bty, bty-tui, bty-web (default: bty-media's own directory)")
	pf.StringVar(&e.kernelDeb, "kernel-deb", "", "use this Debian linux-image-<version> `FILE`.deb instead of linux-image-amd64's current kernel")
	pf.BoolVarP(&e.verbose, "verbose", "v", false, "log more (cache hits)")
	pf.BoolVarP(&e.quiet, "quiet", "q", false, "log warnings and errors only")
	root.AddCommand(newNetbootCmd(e), newUSBCmd(e), newServerCmd(e))
	root.SetFlagErrorFunc(cmdrun.SeeHelp)
	return root
}

// sizeFlag is a byte size flag: "4GiB", "512MiB", "8G", "1073741824".
type sizeFlag struct{ n int64 }

func (s *sizeFlag) String() string { return human.Bytes(s.n) }
func (s *sizeFlag) Type() string   { return "size" }
func (s *sizeFlag) Set(v string) error {
	n, err := humanize.ParseBytes(strings.ReplaceAll(v, " ", ""))
	if err != nil {
		return fmt.Errorf("%q is not a size: write it like 4GiB or 512MiB", v)
	}
	if n > 1<<50 {
		return fmt.Errorf("%q is too large", v)
	}
	s.n = int64(n)
	return nil
}

// printFile prints one artifact line: path, size, sha256.
func printFile(w io.Writer, path string, size int64, sum string) {
	fmt.Fprintf(w, "%s\t%s\tsha256:%s\n", path, human.Bytes(size), sum)
}

func elapsed(t0 time.Time) string { return time.Since(t0).Round(100 * time.Millisecond).String() }
