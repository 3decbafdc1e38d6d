// Package disk discovers block devices from sysfs and mountinfo (never
// lsblk), decides whether one may be a flash target, and wraps the ioctls
// the engine needs (BLKGETSIZE64, BLKZEROOUT, BLKDISCARD, BLKRRPART).
package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// Disk describes one whole block device.
type Disk struct {
	Path      string `json:"path"`
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	// Type is "disk", "loop", "md", "dm", "rom", ...
	Type      string `json:"type"`
	Transport string `json:"transport"`
	Vendor    string `json:"vendor"`
	Model     string `json:"model"`
	Serial    string `json:"serial"`
	Removable bool   `json:"removable"`
	ReadOnly  bool   `json:"read_only"`
	// Mountpoints are where the disk itself or one of its partitions is
	// mounted.
	Mountpoints []string `json:"mountpoints"`
	// Holders are devices stacked on this disk or its partitions (LVM/dm,
	// md, bcache), by kernel name.
	Holders []string `json:"holders"`
	// Partitions are the kernel names of the disk's partitions
	// ("sda1", "nvme0n1p2"), in partition-number order.
	Partitions []string `json:"partitions"`
	// System is set when the running system or the live media lives on
	// this disk.
	System bool `json:"system"`
	// LogicalBlockSize is the sector size writes must align to.
	LogicalBlockSize int `json:"logical_block_size"`
	// Major and Minor identify the device.
	Major uint32 `json:"-"`
	Minor uint32 `json:"-"`

	// BackingFile is the file behind a loop device.
	BackingFile string `json:"backing_file,omitempty"`
	// HolderMountpoints are mount points of devices stacked on this disk
	// (an LVM volume, a RAID array), found through Holders.
	HolderMountpoints []string `json:"holder_mountpoints,omitempty"`
	// Swaps are active swap areas on the disk, its partitions or its
	// holders (from /proc/swaps).
	Swaps []string `json:"swaps,omitempty"`
	// SystemReasons say why System is set ("/ is mounted from vda2").
	SystemReasons []string `json:"system_reasons,omitempty"`
}

// ZeroMethod says how ZeroRange zeroed a range.
type ZeroMethod string

const (
	// ZeroOut: the kernel zeroed the range (BLKZEROOUT), usually without
	// moving the zeros over the bus (WRITE ZEROES, or fallocate on a loop
	// device's backing file).
	ZeroOut ZeroMethod = "zeroout"
	// ZeroWrite: bty wrote zero-filled buffers because the device refused
	// BLKZEROOUT.
	ZeroWrite ZeroMethod = "write"
)

// Errors returned (wrapped) by Get and OpenTarget; test with errors.Is.
var (
	// ErrNotExist: the path names nothing. It also matches os.ErrNotExist.
	ErrNotExist error = notExistError{}
	// ErrNotBlockDevice: the path exists but is a file, directory or
	// character device.
	ErrNotBlockDevice = errors.New("not a block device")
	// ErrIsPartition: the path is a partition; bty flashes whole disks.
	ErrIsPartition = errors.New("is a partition, not a whole disk")
	// ErrBusy: the kernel refused exclusive access.
	ErrBusy = errors.New("in use: mounted or held by another program")
	// ErrReadOnly: the device is read-only (BLKROGET).
	ErrReadOnly = errors.New("the device is read-only")
)

type notExistError struct{}

func (notExistError) Error() string        { return "no such device" }
func (notExistError) Is(target error) bool { return target == fs.ErrNotExist }

// userError carries a complete, user-facing message while still matching
// its sentinel with errors.Is.
type userError struct {
	msg string
	err error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.err }

// SystemMountpoints are the mount points whose backing disk is the running
// system or the live media: such a disk is never a flash target. They are
// resolved through device-mapper and md slaves and loop backing files down
// to the physical disk.
var SystemMountpoints = []string{
	"/", "/boot", "/boot/efi", "/usr", "/var",
	"/run/live/medium", "/lib/live/mount/medium", "/run/initramfs/live",
	"/var/lib/bty/images",
}

// LiveDiskEnv names an environment variable the live environment sets to
// the device path(s) or serial number(s) of the disk it booted from
// (comma separated); that disk is marked System.
const LiveDiskEnv = "BTY_LIVE_DISK"

// Problems returns the reasons d must not be a flash target, each a
// sentence telling the user what to do; nil when d may be flashed. It
// judges the state captured when d was read by List or Get.
func (d Disk) Problems() []string {
	var p []string
	if mps := append(append([]string(nil), d.Mountpoints...), d.HolderMountpoints...); len(mps) > 0 {
		p = append(p, fmt.Sprintf("mounted at %s; unmount first", strings.Join(mps, ", ")))
	}
	for _, s := range d.Swaps {
		p = append(p, fmt.Sprintf("in use as swap (%s); run swapoff %s first", s, s))
	}
	for _, h := range d.Holders {
		p = append(p, holderProblem(h))
	}
	if d.System {
		why := ""
		if len(d.SystemReasons) > 0 {
			why = " (" + strings.Join(d.SystemReasons, "; ") + ")"
		}
		p = append(p, "the running system or the live media is on this disk"+why+"; pick another disk")
	}
	if d.Type == "rom" {
		p = append(p, "is an optical drive; pick a disk")
	}
	if d.ReadOnly {
		p = append(p, "read-only; clear the write-protect switch or run blockdev --setrw "+d.Path+", or pick another disk")
	}
	if d.SizeBytes == 0 {
		if d.Type == "disk" || d.Type == "rom" {
			p = append(p, "has no medium (size 0); insert one or pick another disk")
		} else {
			p = append(p, "has size 0 (not set up); pick another disk")
		}
	}
	return p
}

func holderProblem(h string) string {
	switch {
	case strings.HasPrefix(h, "dm-"):
		return "held by " + h + " (LVM or device-mapper); deactivate it first"
	case strings.HasPrefix(h, "md"):
		return "held by " + h + " (software RAID); stop it first"
	case strings.HasPrefix(h, "bcache"):
		return "held by " + h + " (bcache); detach it first"
	default:
		return "held by " + h + "; release it first"
	}
}

// Transport is the bus a block device named name sits on, from its
// device path in sysfs (/sys/devices/...), as lsblk derives it: nvme,
// usb, sata, mmc, virtio or scsi; "" when none is recognised.
func Transport(name, devPath string) string {
	p := filepath.ToSlash(devPath)
	switch {
	case strings.HasPrefix(name, "nvme") || strings.Contains(p, "/nvme/"):
		return "nvme"
	case strings.Contains(p, "/usb"):
		return "usb"
	case strings.Contains(p, "/ata"):
		return "sata"
	case strings.HasPrefix(name, "mmcblk") || strings.Contains(p, "/mmc_host/"):
		return "mmc"
	case strings.Contains(p, "/virtio") && !strings.Contains(p, "/host"):
		return "virtio"
	case strings.Contains(p, "/host") && strings.Contains(p, "/target"):
		return "scsi"
	}
	return ""
}
