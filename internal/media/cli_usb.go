package media

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/ctxio"
)

func newUSBCmd(e *cliEnv) *cobra.Command {
	var out string
	var force bool
	size := sizeFlag{DefaultImagesSize}
	cmd := &cobra.Command{
		Use:   "usb --out FILE [--images-size 4GiB]",
		Short: "Build a USB stick image: the live env plus an exFAT partition for images",
		Long: `Builds a disk image for a USB stick at --out FILE:

  partition 1  BTY_LIVE    EFI system partition (FAT32): the live env
                           (kernel command line bty.mode=usb), booted by
                           systemd-boot on UEFI and SYSLINUX on legacy BIOS
  partition 2  BTY_IMAGES  exFAT, --images-size (default 4GiB): put the
                           images to flash here

Write it to a stick with 'bty flash --image bty-usb.img --target /dev/sdX'
(or any raw writer), then copy images (.img, .img.zst, .qcow2, ...) onto
the BTY_IMAGES partition from Linux, Windows or macOS. Boot a machine from
the stick (UEFI, or legacy BIOS through the GPT boot code in its MBR):
bty-tui offers the stick's images and the machine's disks. Booting never
writes to the stick.

The image is sparse (mostly holes until written to a stick). --out must
not exist unless --force. Needs apt-get, dpkg-deb, mkfs.vfat, mtools and
mkfs.exfat (exfatprogs); SYSLINUX comes as Debian packages like the kernel.`,
		Example: `  bin/bty-media usb --out bty-usb.img --images-size 16GiB
  sudo bin/bty flash --image bty-usb.img --target /dev/sdX --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			err := USB(cmd.Context(), USBOptions{Out: out, CacheDir: e.cacheDir, BinDir: e.binDir, KernelDeb: e.kernelDeb,
				ImagesSize: size.n, Force: force, Log: e.log})
			if err != nil {
				return err
			}
			if err := printImage(e, out, t0); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "next: bty flash --image %s --target /dev/sdX, then copy images onto its BTY_IMAGES partition\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "output image `FILE` (required)")
	cmd.Flags().Var(&size, "images-size", "size of the exFAT images partition")
	cmd.Flags().BoolVar(&force, "force", false, "replace --out if it exists")
	cmd.MarkFlagRequired("out")
	return cmd
}

// printImage prints a disk image's size and sha256.
func printImage(e *cliEnv, out string, t0 time.Time) error {
	done := step(e.log, "sha256 of the image")
	sum, err := ctxio.FileSHA256(context.Background(), out)
	if err != nil {
		return fmt.Errorf("hashing %s: %w", out, err)
	}
	size, err := fileSize(out)
	if err != nil {
		return err
	}
	done()
	printFile(e.stdout, out, size, sum)
	fmt.Fprintf(e.stdout, "built in %s\n", elapsed(t0))
	return nil
}
