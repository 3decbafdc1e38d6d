package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// zeroChunk is the size of one pwrite in the zero-writing fallback and
// of one BLKZEROOUT call (so a huge range does not sit in one
// uninterruptible ioctl).
const (
	zeroChunk    = 4 << 20
	zeroOutChunk = 1 << 30
)

// Target is a block device opened exclusively for flashing. Its methods
// may be called from several goroutines at once on different ranges.
type Target struct {
	f      *os.File
	path   string
	size   int64
	lbs    int
	direct bool
	// noZeroOut is set once the device refused BLKZEROOUT, so later
	// calls go straight to writing zeros.
	noZeroOut atomic.Bool
}

// OpenTarget opens the block device at path for writing with O_EXCL, so
// the kernel refuses while any partition is mounted or the device is held
// (dm, md, another O_EXCL opener), and with O_DIRECT when direct is set
// (then every buffer, offset and length must be aligned to
// LogicalBlockSize). Errors wrap ErrBusy, ErrNotExist,
// ErrNotBlockDevice or ErrReadOnly.
func OpenTarget(path string, direct bool) (*Target, error) {
	flags := os.O_RDWR | unix.O_EXCL | unix.O_CLOEXEC
	if direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, &userError{
				msg: fmt.Sprintf("opening %s: %s; unmount it, deactivate what holds it (see `bty list disks`), or wait for the other program", path, ErrBusy),
				err: ErrBusy,
			}
		case errors.Is(err, fs.ErrNotExist):
			return nil, &userError{
				msg: fmt.Sprintf("opening %s: it does not exist; `bty list disks` shows the disks present", path),
				err: ErrNotExist,
			}
		case errors.Is(err, unix.EROFS):
			return nil, fmt.Errorf("opening %s for writing: %w; the device is read-only (write-protect switch or blockdev --setro)", path, err)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("opening %s for writing: %w; run as root, and check the device is not read-only", path, err)
		case errors.Is(err, unix.EINVAL) && direct:
			return nil, fmt.Errorf("opening %s with O_DIRECT: %w; the device or its backing file does not support direct I/O", path, err)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	t := &Target{f: f, path: path, direct: direct}
	if err := t.init(); err != nil {
		f.Close()
		return nil, err
	}
	return t, nil
}

func (t *Target) init() error {
	fi, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("looking at %s: %w", t.path, err)
	}
	if fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
		return &userError{
			msg: fmt.Sprintf("%s is not a block device; give a disk such as /dev/sda (see `bty list disks`)", t.path),
			err: ErrNotBlockDevice,
		}
	}
	var size uint64
	var lbs, ro int
	var ierr error
	err = t.control(func(fd int) {
		// The kernel lets a read-only device be opened for writing and
		// fails each write (EPERM); refuse up front instead.
		if ro, ierr = unix.IoctlGetInt(fd, unix.BLKROGET); ierr != nil {
			ierr = fmt.Errorf("asking whether %s is read-only (BLKROGET): %w", t.path, ierr)
			return
		}
		if size, ierr = unix.IoctlGetUint64(fd, unix.BLKGETSIZE64); ierr != nil {
			ierr = fmt.Errorf("reading the size of %s (BLKGETSIZE64): %w", t.path, ierr)
			return
		}
		if lbs, ierr = unix.IoctlGetInt(fd, unix.BLKSSZGET); ierr != nil {
			ierr = fmt.Errorf("reading the sector size of %s (BLKSSZGET): %w", t.path, ierr)
		}
	})
	if err != nil {
		return err
	}
	if ierr != nil {
		return ierr
	}
	if ro != 0 {
		return &userError{
			msg: fmt.Sprintf("opening %s: %s; clear the write-protect switch or run blockdev --setrw %s, or pick another disk", t.path, ErrReadOnly, t.path),
			err: ErrReadOnly,
		}
	}
	if lbs <= 0 {
		lbs = 512
	}
	t.size, t.lbs = int64(size), lbs
	return nil
}

// control runs fn with the file descriptor, safely against a concurrent
// Close.
func (t *Target) control(fn func(fd int)) error {
	rc, err := t.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s: %w", t.path, err)
	}
	if err := rc.Control(func(fd uintptr) { fn(int(fd)) }); err != nil {
		return fmt.Errorf("%s: %w", t.path, err)
	}
	return nil
}

// File returns the open device.
func (t *Target) File() *os.File { return t.f }

// Path returns the path OpenTarget was given.
func (t *Target) Path() string { return t.path }

// Size returns the device size in bytes (BLKGETSIZE64, read at open).
func (t *Target) Size() int64 { return t.size }

// LogicalBlockSize returns the sector size writes must align to
// (BLKSSZGET).
func (t *Target) LogicalBlockSize() int { return t.lbs }

// WriteAt writes p at off (pwrite; safe for concurrent use).
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	n, err := t.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("writing %d bytes at offset %d of %s: %w", len(p), off, t.path, err)
	}
	return n, nil
}

// ReadAt reads into p from off (pread; safe for concurrent use). Like
// io.ReaderAt it returns io.EOF (unwrapped) at the end of the device.
func (t *Target) ReadAt(p []byte, off int64) (int, error) {
	return t.f.ReadAt(p, off)
}

func (t *Target) checkRange(op string, off, n int64) error {
	if off < 0 || n < 0 || off > t.size || n > t.size-off {
		return fmt.Errorf("%s %s: range [%d, %d) is outside the device (size %d)", op, t.path, off, off+n, t.size)
	}
	lbs := int64(t.lbs)
	if off%lbs != 0 || n%lbs != 0 {
		return fmt.Errorf("%s %s: range [%d, %d) is not aligned to the %d-byte logical block size; align offset and length to it", op, t.path, off, off+n, lbs)
	}
	return nil
}

// ZeroRange makes [off, off+n) read back as zeros. off and n must be
// multiples of LogicalBlockSize. It asks the kernel (BLKZEROOUT) first
// and, when the device refuses (EOPNOTSUPP, EINVAL, ENOTTY), writes zeros
// in large pwrite calls; once refused, later calls write zeros directly.
// It is safe to call concurrently with WriteAt on other ranges. Without
// O_DIRECT, keep concurrent ranges from sharing a 4 KiB page: BLKZEROOUT
// drops the page cache over its range, and a buffered write that reads
// the rest of a shared page back in at the same moment could write stale
// bytes over the zeros.
func (t *Target) ZeroRange(off, n int64) (ZeroMethod, error) {
	if err := t.checkRange("zeroing", off, n); err != nil {
		return "", err
	}
	pos, end := off, off+n
	if !t.noZeroOut.Load() {
		for pos < end {
			m := min(end-pos, zeroOutChunk)
			err := t.ioctlRange(unix.BLKZEROOUT, pos, m)
			if err == nil {
				pos += m
				continue
			}
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
				t.noZeroOut.Store(true)
				break
			}
			return "", fmt.Errorf("zeroing [%d, %d) of %s (BLKZEROOUT): %w", pos, pos+m, t.path, err)
		}
		if pos == end {
			return ZeroOut, nil
		}
	}
	buf := zeroBuffer()
	for pos < end {
		m := min(end-pos, int64(len(buf)))
		if _, err := t.f.WriteAt(buf[:m], pos); err != nil {
			return "", fmt.Errorf("writing zeros at offset %d of %s: %w", pos, t.path, err)
		}
		pos += m
	}
	return ZeroWrite, nil
}

// Discard tells the device [off, off+n) is unused (BLKDISCARD). What the
// range reads back afterwards depends on the device; use ZeroRange when
// it must be zeros.
func (t *Target) Discard(off, n int64) error {
	if err := t.checkRange("discarding", off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := t.ioctlRange(unix.BLKDISCARD, off, n); err != nil {
		return fmt.Errorf("discarding [%d, %d) of %s (BLKDISCARD): %w", off, off+n, t.path, err)
	}
	return nil
}

// ioctlRange issues an ioctl that takes a {start, length} uint64 pair.
func (t *Target) ioctlRange(req uint, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	var errno syscall.Errno
	err := t.control(func(fd int) {
		for {
			_, _, errno = unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&r)))
			if errno != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

var (
	zeroOnce sync.Once
	zeroBuf  []byte
)

// zeroBuffer returns a shared, page-aligned (so O_DIRECT accepts it),
// read-only buffer of zeros.
func zeroBuffer() []byte {
	zeroOnce.Do(func() {
		const align = 4096
		b := make([]byte, zeroChunk+align)
		skip := 0
		if r := int(uintptr(unsafe.Pointer(&b[0])) % align); r != 0 {
			skip = align - r
		}
		zeroBuf = b[skip : skip+zeroChunk : skip+zeroChunk]
	})
	return zeroBuf
}

// Sync flushes written data to the device (fsync).
func (t *Target) Sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", t.path, err)
	}
	return nil
}

// RereadPartitions asks the kernel to re-read the partition table
// (BLKRRPART), retrying for a few seconds while the device is busy. A
// device that cannot have partitions (EINVAL: a loop device without
// partscan) counts as success.
func (t *Target) RereadPartitions() error {
	const tries = 10
	for i := 0; ; i++ {
		var errno syscall.Errno
		err := t.control(func(fd int) {
			_, _, errno = unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKRRPART, 0)
		})
		if err != nil {
			return err
		}
		switch {
		case errno == 0, errno == unix.EINVAL:
			return nil
		case errno == unix.EBUSY && i < tries-1, errno == unix.EINTR:
			time.Sleep(200 * time.Millisecond)
			continue
		case errno == unix.EBUSY:
			return &userError{
				msg: fmt.Sprintf("re-reading the partition table of %s: %s; a partition was mounted or opened after the write, unmount it and run `blockdev --rereadpt %s`", t.path, ErrBusy, t.path),
				err: ErrBusy,
			}
		}
		return fmt.Errorf("re-reading the partition table of %s (BLKRRPART): %w", t.path, errno)
	}
}

// Close closes the device.
func (t *Target) Close() error {
	if err := t.f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", t.path, err)
	}
	return nil
}
