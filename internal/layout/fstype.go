package layout

import (
	"bytes"
	"encoding/binary"
	"io"
)

// Filesystem names, as blkid spells them.
const (
	FSExt2     = "ext2"
	FSExt3     = "ext3"
	FSExt4     = "ext4"
	FSXFS      = "xfs"
	FSBtrfs    = "btrfs"
	FSVFAT     = "vfat"
	FSExFAT    = "exfat"
	FSNTFS     = "ntfs"
	FSF2FS     = "f2fs"
	FSSquashFS = "squashfs"
	FSISO9660  = "iso9660"
	FSSwap     = "swap"
	FSLVM      = "LVM2_member"
	FSLUKS     = "crypto_LUKS"
	FSRAID     = "linux_raid_member"
)

// Probe names the filesystem (or volume format) whose superblock sits in
// [off, off+size) of r, or "" when nothing known is found. It reads a few
// small blocks. libblkid does this in C; no Go library covers these
// formats together, so the magic numbers are checked here by hand.
func Probe(r io.ReaderAt, off, size int64) string {
	read := func(at, n int64) []byte {
		if at+n > size {
			return nil
		}
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off+at); err != nil && err != io.EOF {
			return nil
		}
		return b
	}
	// Containers first: an encrypted or LVM volume is never mistaken for
	// the filesystem it may hold.
	if b := read(0, 6); bytes.Equal(b, []byte("LUKS\xba\xbe")) {
		return FSLUKS
	}
	for sector := int64(0); sector < 4; sector++ {
		if b := read(sector*512, 32); b != nil && string(b[0:8]) == "LABELONE" && string(b[24:32]) == "LVM2 001" {
			return FSLVM
		}
	}
	// md RAID superblocks 1.1 (at 0) and 1.2 (at 4 KiB).
	for _, at := range []int64{0, 4096} {
		if b := read(at, 4); b != nil && binary.LittleEndian.Uint32(b) == 0xa92b4efc {
			return FSRAID
		}
	}
	if b := read(0, 4); b != nil && string(b) == "XFSB" {
		return FSXFS
	}
	if b := read(0x10040, 8); b != nil && string(b) == "_BHRfS_M" {
		return FSBtrfs
	}
	if b := read(1024, 0x68); b != nil && binary.LittleEndian.Uint16(b[0x38:]) == 0xef53 {
		compat := binary.LittleEndian.Uint32(b[0x5c:])
		incompat := binary.LittleEndian.Uint32(b[0x60:])
		const (
			hasJournal = 0x4
			// extents, 64bit, flex_bg, mmp, meta_bg, inline data...
			ext4Incompat = 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x8000 | 0x10000
		)
		switch {
		case incompat&ext4Incompat != 0:
			return FSExt4
		case compat&hasJournal != 0:
			return FSExt3
		default:
			return FSExt2
		}
	}
	if b := read(1024, 4); b != nil && binary.LittleEndian.Uint32(b) == 0xf2f52010 {
		return FSF2FS
	}
	if b := read(0, 4); b != nil && string(b) == "hsqs" {
		return FSSquashFS
	}
	if b := read(0x8001, 5); b != nil && string(b) == "CD001" {
		return FSISO9660
	}
	if b := read(0, 512); b != nil {
		switch {
		case string(b[3:11]) == "EXFAT   ":
			return FSExFAT
		case string(b[3:11]) == "NTFS    ":
			return FSNTFS
		case b[510] == 0x55 && b[511] == 0xaa && (b[0] == 0xeb || b[0] == 0xe9) &&
			(bytes.HasPrefix(b[54:62], []byte("FAT1")) || string(b[82:90]) == "FAT32   " ||
				bytes.HasPrefix(b[54:62], []byte("FAT   "))):
			return FSVFAT
		}
	}
	// Swap signatures sit at the end of the first page, whatever size the
	// page had on the machine that made them.
	for _, page := range []int64{4096, 8192, 16384, 65536} {
		if b := read(page-10, 10); b != nil && (string(b) == "SWAPSPACE2" || string(b) == "SWAP-SPACE") {
			return FSSwap
		}
	}
	return ""
}
