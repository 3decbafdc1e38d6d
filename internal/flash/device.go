package flash

import (
	"io"
	"unsafe"

	"github.com/btyproject/bty/internal/disk"
)

// Device is what the copy pipeline writes to: a block device opened by
// disk.OpenTarget, or (in tests that cannot use loop devices) a regular
// file that zeroes by punching holes. Both are real storage.
type Device interface {
	io.WriterAt
	io.ReaderAt
	// ZeroRange makes [off, off+n) read back as zeros without sending the
	// bytes. off and n are multiples of LogicalBlockSize.
	ZeroRange(off, n int64) (disk.ZeroMethod, error)
	Sync() error
	Size() int64
	LogicalBlockSize() int
}

var _ Device = (*disk.Target)(nil)

// pageSize is the alignment of every I/O buffer, so the same buffers work
// for O_DIRECT on any logical block size up to 4 KiB.
const pageSize = 4096

// alignedBuf returns an n-byte slice whose first byte is page aligned.
func alignedBuf(n int) []byte {
	b := make([]byte, n+pageSize)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) & (pageSize - 1)); r != 0 {
		shift = pageSize - r
	}
	return b[shift : shift+n : shift+n]
}
