package media

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/human"
)

func newNetbootCmd(e *cliEnv) *cobra.Command {
	out := "bty-live"
	cmd := &cobra.Command{
		Use:   "netboot [--out DIR]",
		Short: "Build the netboot kernel and initrd for bty-web's PXE clients",
		Long: `Builds the netboot live environment into --out DIR (default ./bty-live):

  bty-live-x86_64.vmlinuz   Debian's kernel
  bty-live-x86_64.initrd    the initramfs (zstd newc cpio): bty as /init,
                            bty-tui, busybox, the disk/NIC/filesystem modules
  SHA256SUMS                both files' sha256, for sha256sum -c

Files already in DIR are replaced. To use them, copy the three files into
bty-web's boot directory (BTY_BOOT_DIR, default $BTY_STATE_DIR/boot);
machines that PXE-boot from bty-web then boot this live env.

Needs apt-get and dpkg-deb.`,
		Example: `  make build && bin/bty-media netboot --out /var/lib/bty/boot`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			a, err := Netboot(cmd.Context(), NetbootOptions{OutDir: out, CacheDir: e.cacheDir, BinDir: e.binDir, KernelDeb: e.kernelDeb, Log: e.log})
			if err != nil {
				return err
			}
			w := e.stdout
			printFile(w, a.Kernel, a.KernelSize, a.KernelSHA256)
			printFile(w, a.Initrd, a.InitrdSize, a.InitrdSHA256)
			fmt.Fprintf(w, "%s\tchecksums of both\n", a.Manifest)
			fmt.Fprintf(w, "kernel %s, %d modules, vmlinuz + initrd = %s, built in %s\n",
				a.KernelVersion, a.Modules, human.Bytes(a.KernelSize+a.InitrdSize), elapsed(t0))
			printReport(w, a.ModuleReport)
			fmt.Fprintf(w, "next: copy %s/* into bty-web's BTY_BOOT_DIR\n", strings.TrimSuffix(out, "/"))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", out, "output `DIR` (created if missing)")
	return cmd
}

func printReport(w interface{ Write([]byte) (int, error) }, r ModuleReport) {
	if len(r.Builtin) > 0 {
		fmt.Fprintf(w, "built into the kernel (nothing to add): %s\n", strings.Join(r.Builtin, " "))
	}
	if len(r.TooBig) > 0 {
		fmt.Fprintf(w, "left out, too big: %s\n", strings.Join(r.TooBig, " "))
	}
	if len(r.Missing) > 0 {
		fmt.Fprintf(w, "not in this kernel: %s\n", strings.Join(r.Missing, " "))
	}
}
