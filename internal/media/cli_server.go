package media

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newServerCmd(e *cliEnv) *cobra.Command {
	var out string
	var force bool
	size := sizeFlag{DefaultStateSize}
	cmd := &cobra.Command{
		Use:   "server --out FILE [--state-size 8GiB]",
		Short: "Build a disk image for a bty appliance: bty-web, PXE boot files, state partition",
		Long: `Builds a disk image for a bty server appliance at --out FILE:

  partition 1  BTY_LIVE   EFI system partition (FAT32): the server live
                          env (bty-web, iPXE boot files; kernel command
                          line bty.mode=server), booted by systemd-boot on
                          UEFI and SYSLINUX on legacy BIOS
  partition 2  BTY_STATE  ext4, --state-size (default 8GiB): boot/ holds
                          the netboot kernel and initrd the appliance
                          hands to PXE clients (built in the same run),
                          images/ the images it serves, and bty-web's state

Flash it onto the server's own disk ('bty flash --image bty-server.img
--target /dev/sdX', from a USB live env or another system) and boot it
(UEFI or legacy BIOS). On first boot it prints the admin password on the console.

The image is sparse. --out must not exist unless --force. Needs apt-get,
dpkg-deb, mkfs.vfat, mtools and mkfs.ext4 (e2fsprogs).`,
		Example: `  bin/bty-media server --out bty-server.img --state-size 64GiB`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			err := Server(cmd.Context(), ServerOptions{Out: out, CacheDir: e.cacheDir, BinDir: e.binDir, KernelDeb: e.kernelDeb,
				StateSize: size.n, Force: force, Log: e.log})
			if err != nil {
				return err
			}
			if err := printImage(e, out, t0); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "next: flash %s onto the server's disk and boot it; the admin password is printed on its console\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "output image `FILE` (required)")
	cmd.Flags().Var(&size, "state-size", "size of the ext4 state partition")
	cmd.Flags().BoolVar(&force, "force", false, "replace --out if it exists")
	cmd.MarkFlagRequired("out")
	return cmd
}
