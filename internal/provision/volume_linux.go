package provision

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/layout"
)

// volume is a partition made reachable as a block device: the kernel's
// partition node, or a loop device bty attached over the partition's
// byte range (live envs without udev and kernels without partition
// support have no nodes).
type volume struct {
	Path string
	// Loop is set when bty attached the loop device; close detaches it.
	Loop *os.File
	// backing is the loop device's backing file (the whole disk).
	backing string
}

// Via says how the partition was reached, for messages and results.
func (v *volume) Via() string {
	if v.Loop != nil {
		return "loop device " + v.Path
	}
	return v.Path
}

// openVolume reaches partition p of the whole disk d.
func openVolume(d disk.Disk, p layout.Partition) (*volume, error) {
	if p.Number == 0 {
		return &volume{Path: d.Path}, nil
	}
	if node, ok := partitionNode(d, p); ok {
		return &volume{Path: node}, nil
	}
	return attachLoop(d.Path, p.Start, p.Size)
}

// partitionNode returns the kernel's node for p when it exists and covers
// exactly p's range (a stale kernel view is not trusted).
func partitionNode(d disk.Disk, p layout.Partition) (string, bool) {
	for _, name := range disk.Partitions(d.Name) {
		dir := filepath.Join(disk.SysRoot, "class", "block", name)
		num, _ := strconv.Atoi(readSys(dir, "partition"))
		start, _ := strconv.ParseInt(readSys(dir, "start"), 10, 64)
		size, _ := strconv.ParseInt(readSys(dir, "size"), 10, 64)
		if num != p.Number || start*512 != p.Start || size*512 != p.Size {
			continue
		}
		node := filepath.Join(disk.DevRoot, name)
		if st, err := os.Stat(node); err == nil && st.Mode()&os.ModeDevice != 0 {
			return node, true
		}
	}
	return "", false
}

func readSys(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// attachLoop attaches a free loop device to [off, off+size) of backing.
// The device has LO_FLAGS_AUTOCLEAR, so it also goes away if bty dies
// after unmounting; close detaches it explicitly. util-linux's losetup is
// not used: live envs may not have it, and the ioctls are three calls.
func attachLoop(backing string, off, size int64) (*volume, error) {
	ctl, err := os.OpenFile(filepath.Join(disk.DevRoot, "loop-control"), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s/loop-control: %w; the kernel has no loop support (modprobe loop)", disk.DevRoot, err)
	}
	defer ctl.Close()
	bf, err := os.OpenFile(backing, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", backing, err)
	}
	defer bf.Close()

	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		path := filepath.Join(disk.DevRoot, "loop"+strconv.Itoa(n))
		lf, err := openLoopNode(path, n)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(bf.Fd()), Info: unix.LoopInfo64{
			Offset: uint64(off), Sizelimit: uint64(size), Flags: unix.LO_FLAGS_AUTOCLEAR,
		}}
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			// Kernels before 5.8 lack LOOP_CONFIGURE.
			err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_FD, int(bf.Fd()))
			if err == nil {
				if err = unix.IoctlLoopSetStatus64(int(lf.Fd()), &cfg.Info); err != nil {
					_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
				}
			}
		}
		if errors.Is(err, unix.EBUSY) {
			// Another program took this device first.
			lf.Close()
			lastErr = err
			continue
		}
		if err != nil {
			lf.Close()
			return nil, fmt.Errorf("attaching %s to %s at offset %d: %w", path, backing, off, err)
		}
		real, err := filepath.EvalSymlinks(backing)
		if err != nil {
			real = backing
		}
		return &volume{Path: path, Loop: lf, backing: real}, nil
	}
	return nil, fmt.Errorf("attaching a loop device to %s: every free device was taken by another program (%w); try again", backing, lastErr)
}

// openLoopNode opens /dev/loopN, creating the node when devtmpfs has not
// (yet) made it.
func openLoopNode(path string, n int) (*os.File, error) {
	lf, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		const loopMajor = 7
		if merr := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(loopMajor, uint32(n)))); merr != nil && !errors.Is(merr, unix.EEXIST) {
			return nil, fmt.Errorf("creating %s: %w", path, merr)
		}
		lf, err = os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return lf, nil
}

// close detaches a loop device bty attached; a kernel node is left alone.
func (v *volume) close() error {
	if v.Loop == nil {
		return nil
	}
	defer func() { v.Loop = nil }()
	fd := int(v.Loop.Fd())
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		err = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cerr := v.Loop.Close()
	if err != nil && !errors.Is(err, unix.ENXIO) {
		// ENXIO: already detached.
		return fmt.Errorf("detaching %s: %w; detach it with losetup -d %s", v.Path, err, v.Path)
	}
	// While a filesystem's release of the device is still in flight,
	// the kernel defers the detach to the last close (AUTOCLEAR), which
	// may finish asynchronously: wait for it, so that nothing is left
	// attached when bty reports success.
	// (Another program may take the free device at once: only our
	// backing file counts.)
	bf := filepath.Join(disk.SysRoot, "block", filepath.Base(v.Path), "loop", "backing_file")
	for attempt := 0; attempt < 100; attempt++ {
		if b, err := os.ReadFile(bf); err != nil || strings.TrimSpace(string(b)) != v.backing {
			return cerr
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s is still attached 5 s after detaching it; detach it with losetup -d %s", v.Path, v.Path)
}

// mount is a filesystem bty mounted on a private temporary directory.
type mount struct {
	Dir    string
	Dev    string
	FSType string
	RW     bool
}

// Mount flags: probing is read-only and inert; a workflow gets a plain
// read-write mount (it may chroot and run the image's programs).
const (
	mountProbe = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	mountPlain = 0
)

// mountVolume mounts dev (a filesystem of type fs, as probed) on a new
// temporary directory with flags (mountProbe or mountPlain).
// data holds filesystem options ("subvol=root").
func mountVolume(dev, fs string, flags uintptr, data string) (*mount, error) {
	typ := mountType(fs)
	if typ == "" {
		return nil, fmt.Errorf("bty does not mount %s filesystems", fs)
	}
	if typ == layout.FSXFS {
		// Several disks flashed from one image share the xfs UUID; xfs
		// refuses a second mount of a UUID without this.
		data = strings.Trim(data+",nouuid", ",")
	}
	dir, err := os.MkdirTemp("", "bty-mnt-")
	if err != nil {
		return nil, fmt.Errorf("making a mount point: %w", err)
	}
	if err := unix.Mount(dev, dir, typ, flags, data); err != nil {
		os.Remove(dir)
		return nil, mountError(dev, fs, typ, err)
	}
	// Keep the mount out of other mount namespaces' view.
	_ = unix.Mount("", dir, "", unix.MS_PRIVATE, "")
	return &mount{Dir: dir, Dev: dev, FSType: typ, RW: flags&unix.MS_RDONLY == 0}, nil
}

func mountError(dev, fs, typ string, err error) error {
	switch {
	case errors.Is(err, unix.ENODEV):
		return fmt.Errorf("mounting %s (%s): the kernel has no %s driver (modprobe %s)", dev, fs, typ, typ)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EUCLEAN):
		return fmt.Errorf("mounting %s (%s): %w; the filesystem is damaged or uses features this kernel lacks (see dmesg)", dev, fs, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("mounting %s (%s): %w; something else holds it", dev, fs, err)
	}
	return fmt.Errorf("mounting %s (%s): %w", dev, fs, err)
}

// remountRW makes a read-only mount writable.
func (m *mount) remountRW() error {
	if m.RW {
		return nil
	}
	if err := unix.Mount("", m.Dir, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("remounting %s read-write: %w", m.Dev, err)
	}
	m.RW = true
	return nil
}

// unmount syncs and unmounts, waiting a little for late users, and
// removes the mount point.
func (m *mount) unmount() error {
	if m.RW {
		if fd, err := unix.Open(m.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			_ = unix.Syncfs(fd)
			unix.Close(fd)
		}
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		err = unix.Unmount(m.Dir, 0)
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if errors.Is(err, unix.EBUSY) {
		// A process still uses it (a workflow's leftover child): detach
		// it from the tree so nothing else finds it; the kernel finishes
		// when the last user goes.
		if derr := unix.Unmount(m.Dir, unix.MNT_DETACH); derr == nil {
			os.Remove(m.Dir)
			return fmt.Errorf("unmounting %s: still in use; detached it lazily (a process started during provisioning still holds files on it)", m.Dir)
		}
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmounting %s: %w; unmount it by hand (umount %s)", m.Dir, err, m.Dir)
	}
	if rerr := os.Remove(m.Dir); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return fmt.Errorf("removing mount point %s: %w", m.Dir, rerr)
	}
	return nil
}
