// Package media builds bty's live environment and the media that carry
// it: the netboot pair bty-web hands to PXE clients (Netboot), a USB
// stick image (USB) and a server appliance image (Server). Run is the
// bty-media command line.
//
// Inputs: Debian's kernel (the package linux-image-amd64 depends on, or
// --kernel-deb), busybox-static, systemd-boot-efi, syslinux and
// syslinux-common (legacy BIOS boot of the disk images) and ipxe, fetched with
// `apt-get download` and unpacked with `dpkg-deb -x` into a cache
// (FetchKernel, FetchDebFile; nothing is installed), and the static bty,
// bty-tui and bty-web binaries of `make build`.
//
// The initramfs (WriteInitramfs: a zstd-compressed newc cpio, the same
// bytes for the same inputs) has this layout, which the live env relies
// on:
//
//	init -> bin/bty                 the live env is bty as PID 1
//	sbin/modprobe -> ../bin/bty
//	bin/bty, bin/bty-tui            static, 0755
//	bin/busybox                     Debian's busybox-static (no applet links)
//	bin/bty-web                     server kind only
//	usr/lib/ipxe/ipxe.efi, snponly.efi, undionly.kpxe   server kind only
//	lib/modules/<kernel>/<path>.ko  the chosen modules (Modules plus what they need), uncompressed
//	lib/modules/<kernel>/bty-modules.json   their kmod index
//	lib/modules/<kernel>/modules.builtin, modules.order
//	etc/bty/live.json               {"kind","bty_version","kernel","built"}
//	etc/ssl/certs/ca-certificates.crt       the build host's, when present
//	etc/passwd, etc/group           root only
//	dev proc sys run tmp mnt root var/lib/bty/images var/log etc/bty usr/lib
//
// Disk images are GPT (go-diskfs) with MiB-aligned partitions; each
// filesystem is made in its own sparse file by the usual tools (mkfs.vfat
// and mtools, mkfs.exfat, mkfs.ext4 -d) and copied in at its offset.
// Nothing is mounted, no loop device is used, root is not needed.
package media
