package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/fault"
)

// verify reads back every range the copy wrote data to, bypassing the page
// cache (O_DIRECT), and compares its hash with the one taken from the
// decoded stream as it was written. Ranges zeroed by ioctl are not re-read: the kernel
// guarantees them (re-reading the whole disk would double the time).
func verify(ctx context.Context, path string, segs []segmentRecord, workers int) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		// Some devices refuse O_DIRECT; read through the cache after
		// dropping it instead.
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s to verify: %w", path, err)
		}
		_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	}
	defer f.Close()
	return verifyFrom(ctx, f, segs, workers)
}

// verifyFrom checks segs against r; split out so it can be tested on files.
func verifyFrom(ctx context.Context, r interface {
	ReadAt([]byte, int64) (int, error)
}, segs []segmentRecord, workers int) error {
	if workers <= 0 {
		workers = 4
	}
	jobs := make(chan segmentRecord)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for _, s := range segs {
			select {
			case jobs <- s:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for w := 0; w < workers; w++ {
		g.Go(func() error {
			buf := alignedBuf(segmentSize)
			for s := range jobs {
				// O_DIRECT reads must be whole pages; read a rounded-up
				// length and compare only the segment.
				n := (s.Len + pageSize - 1) / pageSize * pageSize
				got, err := r.ReadAt(buf[:n], s.Off)
				if int64(got) < s.Len {
					return fmt.Errorf("verify: reading %d bytes at offset %d: %w", s.Len, s.Off, err)
				}
				sum := xxh3.Hash128(buf[:s.Len]).Bytes()
				if sum != s.Sum {
					return fault.New(fault.Failed,
						"verify failed: bytes %d-%d of the target read back with xxh3-128 %s, but the image has %s there; the disk or its connection is faulty, flash again or replace it",
						s.Off, s.Off+s.Len-1, hex.EncodeToString(sum[:]), hex.EncodeToString(s.Sum[:]))
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// verifyFull reads the image's whole range back from the target
// (O_DIRECT) and checks its sha256 (--verify=full): a second full read,
// which proves the disk holds the image whatever the flash skipped.
func verifyFull(ctx context.Context, path string, size int64, want string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		if f, err = os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("opening %s to verify: %w", path, err)
		}
		_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	}
	defer f.Close()
	h := sha256.New()
	buf := alignedBuf(segmentSize)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(buf)), size-off)
		rd := (n + pageSize - 1) / pageSize * pageSize
		got, err := f.ReadAt(buf[:rd], off)
		if int64(got) < n {
			return fmt.Errorf("verify: reading %d bytes at offset %d of %s: %w", n, off, path, err)
		}
		h.Write(buf[:n])
		off += n
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != want {
		return fault.New(fault.Failed, "verify failed: the first %d bytes of %s read back with sha256 %s, but the image's is %s; flash again (without --delta), or replace the disk",
			size, path, sum, want)
	}
	return nil
}
