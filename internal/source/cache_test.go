package source

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// openAt opens srv with small blocks and returns its ReaderAt.
func openAt(t *testing.T, srv *imageServer, blockSize int64, blocks int) (Source, io.ReaderAt) {
	t.Helper()
	opts := fastOpts(nil)
	opts.BlockSize = blockSize
	opts.CacheBlocks = blocks
	src, err := Open(t.Context(), srv.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	ra := src.ReaderAt()
	if ra == nil {
		t.Fatal("no ReaderAt from a server with range support")
	}
	return src, ra
}

func TestReaderAtRandomReads(t *testing.T) {
	const bs = 64 << 10
	data := randomData(3*mib+777, 20) // last block partial
	srv := newImageServer(t, data, nil)
	src, ra := openAt(t, srv, bs, 16)
	size := int64(len(data))

	type read struct {
		off int64
		n   int
	}
	reads := []read{
		{0, 1}, {0, 512},
		{bs - 3, 10},             // across a block boundary
		{5*bs - 100, 3*bs + 200}, // spans several blocks
		{size - 10, 10},          // exactly the end
		{size - 1, 1},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		reads = append(reads, read{r.Int64N(size), 1 + r.IntN(200_000)})
	}
	for _, rd := range reads {
		p := make([]byte, rd.n)
		n, err := ra.ReadAt(p, rd.off)
		want := data[rd.off:min(rd.off+int64(rd.n), size)]
		if n != len(want) || !bytes.Equal(p[:n], want) {
			t.Fatalf("ReadAt(%d, %d) = %d bytes, want %d equal bytes", rd.n, rd.off, n, len(want))
		}
		if n < rd.n && err != io.EOF {
			t.Fatalf("ReadAt(%d, %d) short with err %v, want io.EOF", rd.n, rd.off, err)
		}
		if n == rd.n && err != nil && err != io.EOF {
			t.Fatalf("ReadAt(%d, %d): %v", rd.n, rd.off, err)
		}
	}

	// Past the end: io.EOF as io.ReaderAt requires.
	p := make([]byte, 100)
	if n, err := ra.ReadAt(p, size-10); n != 10 || err != io.EOF || !bytes.Equal(p[:10], data[size-10:]) {
		t.Errorf("read over the end: %d, %v", n, err)
	}
	for _, off := range []int64{size, size + 1, size + 10*mib} {
		if n, err := ra.ReadAt(p, off); n != 0 || err != io.EOF {
			t.Errorf("ReadAt at %d: %d, %v; want 0, io.EOF", off, n, err)
		}
	}
	if _, err := ra.ReadAt(p, -1); err == nil {
		t.Error("negative offset accepted")
	}

	// Random access released the first GET; streaming still works.
	rc, err := src.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || sum(got) != sum(data) {
		t.Fatalf("stream after ReadAt: %d bytes, %v", len(got), err)
	}
}

func TestReaderAtConcurrent(t *testing.T) {
	const bs = 64 << 10
	data := randomData(4*mib+100, 21)
	nblocks := (len(data) + bs - 1) / bs // 65
	srv := newImageServer(t, data, nil)
	// The cache holds every block, so each must be fetched exactly once
	// however the 8 goroutines interleave: a second fetch of a block means
	// the cache or the deduplication of concurrent misses is broken.
	_, ra := openAt(t, srv, bs, nblocks)
	before := srv.rangeRequests.Load()

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 99))
			// Mostly ascending, like a qcow2 convert: small table reads
			// and 64 KiB cluster reads with random gaps.
			off := int64(r.IntN(1000))
			buf := make([]byte, 64<<10)
			for off < int64(len(data)) {
				n := 1 + r.IntN(len(buf))
				if r.IntN(4) == 0 {
					n = 1 + r.IntN(64)
				}
				got, err := ra.ReadAt(buf[:n], off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:got], data[off:off+int64(got)]) {
					errs <- errors.New("content differs")
					return
				}
				off += int64(got) + int64(r.IntN(3*bs))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := srv.rangeRequests.Load() - before; got > int64(nblocks) {
		t.Errorf("%d range requests for %d blocks: a block was fetched twice", got, nblocks)
	}
}

func TestReaderAtLRUBound(t *testing.T) {
	const bs = 32 << 10
	data := randomData(20*bs, 22)
	srv := newImageServer(t, data, nil)
	_, ra := openAt(t, srv, bs, 4)
	p := make([]byte, 10)
	count := func() int64 { return srv.rangeRequests.Load() }

	read := func(block int) {
		t.Helper()
		if _, err := ra.ReadAt(p, int64(block)*bs+5); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[block*bs+5:block*bs+15]) {
			t.Fatalf("block %d differs", block)
		}
	}
	read(0)
	n := count()
	read(0)
	if count() != n {
		t.Fatal("a cached block was fetched again")
	}
	for b := 1; b <= 3; b++ {
		read(b)
	}
	read(0) // still one of the 4 most recent
	if count() != n+3 {
		t.Fatalf("%d requests, want %d", count(), n+3)
	}
	read(4) // evicts block 1, the least recently used
	read(1)
	if count() != n+5 {
		t.Fatalf("%d requests, want %d: LRU did not evict", count(), n+5)
	}
	// Reading everything twice with 4 blocks of room refetches all.
	before := count()
	for range 2 {
		for b := range 20 {
			read(b)
		}
	}
	if got := count() - before; got < 36 {
		t.Fatalf("%d requests for 40 reads of 20 blocks with room for 4: cache unbounded?", got)
	}
}

func TestReaderAtRetriesAndResumesBlock(t *testing.T) {
	const bs = 256 << 10
	data := randomData(2*mib, 23)
	logs := &logBuffer{}
	srv := newImageServer(t, data, func(s *imageServer) {
		s.cut = func(n int, start int64) int64 {
			// The first two range requests for the block at 512 KiB are
			// cut part-way.
			if start >= 2*bs && start < 3*bs && n < 4 {
				return 10_000
			}
			return -1
		}
	})
	opts := fastOpts(logs)
	opts.BlockSize = bs
	src, err := Open(t.Context(), srv.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ra := src.ReaderAt()
	p := make([]byte, bs)
	if _, err := ra.ReadAt(p, 2*bs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, data[2*bs:3*bs]) {
		t.Fatal("block content differs after retries")
	}
	if !strings.Contains(logs.String(), "range request failed, retrying") {
		t.Errorf("retry not logged:\n%s", logs)
	}
	// The retry asked only for the rest of the block.
	found := false
	for i := range int(srv.requests.Load()) {
		if srv.header(i).Get("Range") == "bytes=534288-786431" {
			found = true
		}
	}
	if !found {
		t.Error("no request resumed the block at byte 534288")
	}
}

func TestReaderAtGivesUp(t *testing.T) {
	data := randomData(mib, 24)
	srv := newImageServer(t, data, func(s *imageServer) {
		s.cut = func(n int, start int64) int64 {
			if n > 0 {
				return 0 // every range request dies before its first byte
			}
			return -1
		}
	})
	opts := fastOpts(nil)
	opts.BlockSize = 64 << 10
	opts.Retries = 2
	src, err := Open(t.Context(), srv.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	before := srv.requests.Load()
	_, err = src.ReaderAt().ReadAt(make([]byte, 10), 0)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "after 2 retries") {
		t.Fatalf("err = %v", err)
	}
	if got := srv.requests.Load() - before; got > 20 {
		t.Errorf("%d requests: retries not bounded", got)
	}
}

func TestReaderAtFileChanged(t *testing.T) {
	const bs = 64 << 10
	data := randomData(mib, 25)
	srv := newImageServer(t, data, nil)
	_, ra := openAt(t, srv, bs, 16)
	p := make([]byte, 100)
	if _, err := ra.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	srv.set(randomData(mib, 26), `"v2"`)
	_, err := ra.ReadAt(p, 5*bs)
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "changed on the server") {
		t.Fatalf("err = %v, want ErrChanged", err)
	}
}

func TestReaderAtAvailability(t *testing.T) {
	data := randomData(100_000, 27)
	tests := []struct {
		name  string
		setup func(*imageServer)
		want  bool
	}{
		{"Accept-Ranges bytes", nil, true},
		{"no header but ranges work", func(s *imageServer) { s.acceptRanges = "" }, true},
		{"no range support", func(s *imageServer) { s.acceptRanges = ""; s.noRange = true }, false},
		{"Accept-Ranges none", func(s *imageServer) { s.acceptRanges = "none" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newImageServer(t, data, tc.setup)
			src, err := Open(t.Context(), srv.URL(), fastOpts(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			ra := src.ReaderAt()
			if (ra != nil) != tc.want {
				t.Fatalf("ReaderAt present = %v, want %v", ra != nil, tc.want)
			}
			if ra == nil {
				return
			}
			p := make([]byte, 1000)
			if _, err := ra.ReadAt(p, 50_000); err != nil || !bytes.Equal(p, data[50_000:51_000]) {
				t.Fatalf("ReadAt: %v", err)
			}
		})
	}
}
