package provision

import "github.com/btyproject/bty/internal/layout"

// mountType is the type to pass to mount(2) for a probed filesystem, ""
// when bty does not mount it.
func mountType(fs string) string {
	switch fs {
	case layout.FSExt2, layout.FSExt3, layout.FSExt4:
		// The ext4 driver mounts all three; separate ext2/ext3 drivers
		// are often not built.
		return "ext4"
	case layout.FSXFS, layout.FSBtrfs, layout.FSF2FS, layout.FSVFAT, layout.FSExFAT:
		return fs
	}
	return ""
}

// isLinuxRoot reports whether a filesystem can hold a Linux root (and so
// /etc/cloud).
func isLinuxRoot(fs string) bool {
	switch fs {
	case layout.FSExt2, layout.FSExt3, layout.FSExt4, layout.FSXFS, layout.FSBtrfs, layout.FSF2FS:
		return true
	}
	return false
}

// unsupportedRoot explains why bty cannot provision a root held in fs, or
// "" when it can.
func unsupportedRoot(fs string) string {
	switch fs {
	case layout.FSLVM:
		return "an LVM physical volume; bty does not activate volume groups (that needs device-mapper and the image's LVM metadata)"
	case layout.FSLUKS:
		return "encrypted (LUKS); bty cannot open it without the passphrase"
	case layout.FSRAID:
		return "a member of an md RAID array; bty does not assemble arrays"
	}
	return ""
}
