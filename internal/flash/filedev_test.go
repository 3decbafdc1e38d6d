package flash

import (
	"crypto/rand"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/disk"
)

// fileDevice is a regular file used as a flash target in tests that cannot
// use loop devices. It zeroes by punching holes, which reads back zeros
// exactly like BLKZEROOUT on a loop device (the loop driver does the same
// to its backing file).
type fileDevice struct {
	*os.File
	size int64
	// zeroCalls counts ZeroRange calls; tests assert zero runs are not
	// written as data.
	zeroCalls atomic.Int64
}

func (f *fileDevice) ZeroRange(off, n int64) (disk.ZeroMethod, error) {
	f.zeroCalls.Add(1)
	if off%512 != 0 || n%512 != 0 {
		return "", unix.EINVAL
	}
	return disk.ZeroOut, unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (f *fileDevice) Size() int64           { return f.size }
func (f *fileDevice) LogicalBlockSize() int { return 512 }

// newGarbageDevice makes a size-byte file full of random bytes, so any
// range the copy forgets to write or zero shows up in a comparison.
func newGarbageDevice(t *testing.T, size int64) *fileDevice {
	t.Helper()
	f, err := os.Create(t.TempDir() + "/target")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	return &fileDevice{File: f, size: size}
}

func sleepBriefly() { time.Sleep(20 * time.Millisecond) }
