package image

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// qcow2 is read by bty's own code: version 2 and 3, zlib and zstd
// compressed clusters, zero clusters, extended L2 entries (subclusters)
// and backing chains of raw and qcow2 files next to the image.
//
// Hand-written because no maintained Go library checks what it reads:
// go-qcow2reader, used before, followed L1 and L2 entries without
// checking alignment, reserved bits or bounds, and a cluster whose data
// lay past the end of the file read short, which the last run of the
// image took for its end. Here every metadata entry is checked when its
// table is loaded, the way qemu's qcow2 driver checks it (see
// qcow2_header.go), every table of the active image is loaded and checked
// when the image is opened (so a corrupt image is refused before a byte is
// written), and every read of image data must return every byte it asked
// for.

// L1 and L2 entry bits (qcow2.txt, "Cluster mapping").
const (
	qcowL1OffsetMask    = 0x00fffffffffffe00
	qcowL1Reserved      = 0x7f000000000001ff
	qcowL2OffsetMask    = 0x00fffffffffffe00
	qcowL2StdReserved   = 0x3f000000000001fe
	qcowFlagCopied      = 1 << 63
	qcowFlagCompressed  = 1 << 62
	qcowFlagZero        = 1 << 0
	qcowSubclusters     = 32
	qcowL2CacheBytes    = 16 << 20
	qcowMinCachedTables = 16
)

// qcowBacking is what a backing file offers: a raw file or a qcow2 image.
type qcowBacking interface {
	io.ReaderAt
	Size() int64
	Extent(start, length int64) (Extent, error)
	Close() error
}

// qcowImage is an opened, checked qcow2 image.
type qcowImage struct {
	name      string
	ra        io.ReaderAt
	fileSize  int64 // -1 when unknown
	header    *qcowHeader
	cluster   int64
	size      int64
	l2Entries int64
	sub       int64 // subcluster size with extended L2 entries, else the cluster size
	l1        []uint64
	backing   qcowBacking // nil without a backing file

	// Compressed cluster descriptors (qcow2.txt: x = 62 - (cluster_bits - 8)).
	csizeShift uint
	csizeMask  uint64
	coffMask   uint64

	cache     l2Cache
	clusterIn sync.Pool // compressed input buffers, 2 clusters
	clusterUp sync.Pool // decompressed clusters
}

var _ RandomAccess = (*qcowImage)(nil)

// openQcow2 opens the qcow2 image in ra (fileSize bytes, -1 if unknown).
// localPath is the image's path when it is a local file ("" otherwise);
// backing files are followed only then.
func openQcow2(name, localPath string, ra io.ReaderAt, fileSize int64) (*qcowImage, error) {
	if ra == nil {
		return nil, fmt.Errorf("%s is qcow2, which needs random access: the server must support HTTP Range requests", name)
	}
	q, err := openQcowChain(name, localPath, ra, fileSize, 0)
	if err != nil {
		return nil, err
	}
	if q.size == 0 {
		q.Close()
		return nil, fmt.Errorf("%s: the qcow2 image's virtual size is 0: there is nothing to flash", name)
	}
	return q, nil
}

// maxBackingDepth bounds backing chains (and loops).
const maxBackingDepth = 8

func openQcowChain(name, localPath string, ra io.ReaderAt, fileSize int64, depth int) (*qcowImage, error) {
	h, err := readQcowHeader(ra, fileSize, name)
	if err != nil {
		return nil, err
	}
	q := &qcowImage{
		name: name, ra: ra, fileSize: fileSize, header: h,
		cluster: h.clusterSize, size: h.size,
		l2Entries: h.clusterSize / 8, sub: h.clusterSize,
	}
	if h.extendedL2 {
		q.l2Entries, q.sub = h.clusterSize/16, h.clusterSize/qcowSubclusters
	}
	q.csizeShift = uint(62 - (h.clusterBits - 8))
	q.csizeMask = 1<<(h.clusterBits-8) - 1
	q.coffMask = 1<<q.csizeShift - 1
	q.cache.init(max(qcowMinCachedTables, qcowL2CacheBytes/int(h.clusterSize)))
	if err := q.readL1(); err != nil {
		return nil, err
	}
	if h.backing != "" {
		if q.backing, err = openQcowBacking(q, localPath, depth); err != nil {
			return nil, err
		}
	}
	if err := q.checkTables(); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// readL1 reads the active L1 table and checks every entry.
func (q *qcowImage) readL1() error {
	h := q.header
	raw := make([]byte, h.l1Size*8)
	if err := ReadFullAt(q.ra, raw, h.l1Offset); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return qcowCorrupt(q.name, "the L1 table at file offset %d is cut short by the end of the file", h.l1Offset)
		}
		return fmt.Errorf("%s: reading the qcow2 L1 table at offset %d: %w", q.name, h.l1Offset, err)
	}
	q.l1 = make([]uint64, h.l1Size)
	for i := range q.l1 {
		e := binary.BigEndian.Uint64(raw[8*i:])
		q.l1[i] = e
		at := h.l1Offset + int64(8*i)
		if e&qcowL1Reserved != 0 {
			return qcowCorrupt(q.name, "L1 entry %d (file offset %d) has reserved bits set (0x%016x)", i, at, e)
		}
		off := int64(e & qcowL1OffsetMask)
		if off == 0 {
			continue
		}
		if off%q.cluster != 0 {
			return qcowCorrupt(q.name, "L1 entry %d (file offset %d) points to an L2 table at offset %d, not aligned to the %d-byte cluster size", i, at, off, q.cluster)
		}
		if q.fileSize >= 0 && off+q.cluster > q.fileSize {
			return qcowCorrupt(q.name, "L1 entry %d (file offset %d) points to an L2 table at offset %d, past the end of the %d-byte file", i, at, off, q.fileSize)
		}
	}
	return nil
}

// checkTables loads (and so checks) every L2 table that maps the virtual
// disk. Two L1 entries sharing a table is corruption (qemu never does it)
// and would let a small file describe an endless disk.
func (q *qcowImage) checkTables() error {
	need := min(int64(len(q.l1)), ceilDiv(q.size, q.cluster*q.l2Entries))
	owner := map[uint64]int64{}
	for i := range need {
		off := q.l1[i] & qcowL1OffsetMask
		if off == 0 {
			continue
		}
		if j, dup := owner[off]; dup {
			return qcowCorrupt(q.name, "L1 entries %d and %d (file offsets %d and %d) both point to the L2 table at offset %d",
				j, i, q.header.l1Offset+8*j, q.header.l1Offset+8*i, off)
		}
		owner[off] = i
		if _, err := q.l2Table(i); err != nil {
			return err
		}
	}
	return nil
}

// l2Table returns the checked L2 table of L1 entry i (nil when the entry
// is unallocated).
func (q *qcowImage) l2Table(i int64) ([]uint64, error) {
	if i >= int64(len(q.l1)) {
		return nil, nil
	}
	off := int64(q.l1[i] & qcowL1OffsetMask)
	if off == 0 {
		return nil, nil
	}
	if t := q.cache.get(i); t != nil {
		return t, nil
	}
	raw := make([]byte, q.cluster)
	if err := ReadFullAt(q.ra, raw, off); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, qcowCorrupt(q.name, "the L2 table at file offset %d (L1 entry %d) is cut short by the end of the file", off, i)
		}
		return nil, fmt.Errorf("%s: reading the qcow2 L2 table at offset %d: %w", q.name, off, err)
	}
	t := make([]uint64, q.cluster/8)
	for k := range t {
		t[k] = binary.BigEndian.Uint64(raw[8*k:])
	}
	step := int64(1)
	if q.header.extendedL2 {
		step = 2
	}
	for k := range q.l2Entries {
		var bitmap uint64
		if step == 2 {
			bitmap = t[2*k+1]
		}
		guest := (i*q.l2Entries + k) * q.cluster
		if msg := q.checkL2Entry(t[k*step], bitmap, guest); msg != "" {
			return nil, qcowCorrupt(q.name, "the L2 entry at file offset %d (entry %d of the L2 table at %d, guest offset %d) %s",
				off+k*step*8, k, off, guest, msg)
		}
	}
	q.cache.put(i, t)
	return t, nil
}

// checkL2Entry says what is wrong with an L2 entry (and its subcluster
// bitmap, with extended L2 entries) for the cluster at guest offset
// guest, or "".
func (q *qcowImage) checkL2Entry(e, bitmap uint64, guest int64) string {
	cs := q.cluster
	visible := min(cs, q.size-guest) // bytes of the cluster inside the disk; <= 0 past it
	if e&qcowFlagCompressed != 0 {
		coff := int64(e & q.coffMask)
		nsec := int64((e>>q.csizeShift)&q.csizeMask) + 1
		csize := nsec*512 - coff&511
		switch {
		case e&qcowFlagCopied != 0:
			return "marks a compressed cluster as copied (bit 63), which compressed clusters never are"
		case q.header.extendedL2 && bitmap != 0:
			return fmt.Sprintf("has a non-zero subcluster bitmap (0x%016x) for a compressed cluster", bitmap)
		case coff >= qcowMaxHostOffset:
			return fmt.Sprintf("places compressed data at offset %d, beyond what qcow2 can address", coff)
		case coff < cs:
			return fmt.Sprintf("places compressed data at offset %d, inside the header cluster", coff)
		case visible > 0 && q.fileSize >= 0 && coff >= q.fileSize:
			return fmt.Sprintf("places compressed data at offset %d, past the end of the %d-byte file", coff, q.fileSize)
		case visible > 0 && q.fileSize >= 0 && coff+csize > (q.fileSize+511)&^511:
			return fmt.Sprintf("places %d bytes of compressed data at offset %d, running past the end of the %d-byte file", csize, coff, q.fileSize)
		}
		return ""
	}
	if r := e & qcowL2StdReserved; r != 0 {
		return fmt.Sprintf("has reserved bits set (0x%016x)", e)
	}
	if e&qcowFlagZero != 0 {
		if q.header.version < 3 {
			return "has the zero flag (bit 0) set, which version 2 images do not have"
		}
		if q.header.extendedL2 {
			return "has bit 0 set, which is always 0 with extended L2 entries"
		}
	}
	host := int64(e & qcowL2OffsetMask)
	if host%cs != 0 {
		return fmt.Sprintf("points to host offset %d, not aligned to the %d-byte cluster size", host, cs)
	}
	needed := int64(0) // bytes at host the reads will use
	if q.header.extendedL2 {
		alloc, zero := uint32(bitmap), uint32(bitmap>>32)
		switch {
		case alloc&zero != 0:
			return fmt.Sprintf("marks subclusters both allocated and zero (bitmap 0x%016x)", bitmap)
		case alloc != 0 && host == 0:
			return fmt.Sprintf("marks subclusters allocated (bitmap 0x%016x) without a host offset", bitmap)
		case alloc != 0:
			needed = min(int64(bits.Len32(alloc))*q.sub, visible)
		}
	} else if host != 0 && e&qcowFlagZero == 0 {
		needed = visible
	}
	if needed > 0 && q.fileSize >= 0 && host+needed > q.fileSize {
		return fmt.Sprintf("points to host offset %d, but %d bytes there would run past the end of the %d-byte file", host, needed, q.fileSize)
	}
	return ""
}

// What a run of guest bytes reads as.
const (
	runZero       = iota // zeros
	runBacking           // the backing file (zeros past its end)
	runData              // host bytes at host
	runCompressed        // a compressed cluster
)

// qcowRun is a run of guest bytes with one status, inside one cluster
// (or one unallocated L1 range).
type qcowRun struct {
	kind   int
	length int64
	host   int64 // runData: host offset of the run's first byte; runCompressed: the compressed data
	csize  int64 // runCompressed: bytes of compressed data
	cstart int64 // runCompressed: guest offset of the cluster
}

// lookup returns the run that starts at guest (< q.size).
func (q *qcowImage) lookup(guest int64) (qcowRun, error) {
	unalloc := runZero
	if q.backing != nil {
		unalloc = runBacking
	}
	cs := q.cluster
	ci := guest / cs
	within := guest - ci*cs
	rest := min(cs-within, q.size-guest)
	l1i := ci / q.l2Entries
	t, err := q.l2Table(l1i)
	if err != nil {
		return qcowRun{}, err
	}
	if t == nil {
		// The whole L1 range is unallocated.
		end := min((l1i+1)*q.l2Entries*cs, q.size)
		return qcowRun{kind: unalloc, length: end - guest}, nil
	}
	k := ci % q.l2Entries
	if !q.header.extendedL2 {
		e := t[k]
		switch {
		case e&qcowFlagCompressed != 0:
			coff := int64(e & q.coffMask)
			nsec := int64((e>>q.csizeShift)&q.csizeMask) + 1
			return qcowRun{kind: runCompressed, length: rest, host: coff, csize: nsec*512 - coff&511, cstart: ci * cs}, nil
		case e&qcowFlagZero != 0:
			return qcowRun{kind: runZero, length: rest}, nil
		case e&qcowL2OffsetMask == 0:
			return qcowRun{kind: unalloc, length: rest}, nil
		default:
			return qcowRun{kind: runData, length: rest, host: int64(e&qcowL2OffsetMask) + within}, nil
		}
	}
	e, bitmap := t[2*k], t[2*k+1]
	if e&qcowFlagCompressed != 0 {
		coff := int64(e & q.coffMask)
		nsec := int64((e>>q.csizeShift)&q.csizeMask) + 1
		return qcowRun{kind: runCompressed, length: rest, host: coff, csize: nsec*512 - coff&511, cstart: ci * cs}, nil
	}
	alloc, zero := uint32(bitmap), uint32(bitmap>>32)
	status := func(s int64) int {
		switch {
		case alloc&(1<<s) != 0:
			return runData
		case zero&(1<<s) != 0:
			return runZero
		}
		return unalloc
	}
	s := within / q.sub
	kind := status(s)
	end := s + 1
	for end < qcowSubclusters && status(end) == kind {
		end++
	}
	r := qcowRun{kind: kind, length: min(end*q.sub-within, rest)}
	if kind == runData {
		r.host = int64(e&qcowL2OffsetMask) + within
	}
	return r, nil
}

func (q *qcowImage) Format() Format { return Qcow2 }
func (q *qcowImage) Size() int64    { return q.size }

// Close closes backing files; the image's own file belongs to the source.
func (q *qcowImage) Close() error {
	if q.backing != nil {
		err := q.backing.Close()
		q.backing = nil
		return err
	}
	return nil
}

// ReadAt reads the guest bytes at off. It fills p entirely (returning
// io.EOF only when p reaches past the virtual size) or fails: a short
// read of the file is an error naming the offsets, never the image's end.
// It is safe for concurrent use.
func (q *qcowImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", q.name, off)
	}
	if off >= q.size {
		return 0, io.EOF
	}
	want := p
	if rem := q.size - off; int64(len(p)) > rem {
		want = p[:rem]
	}
	if err := q.read(want, off); err != nil {
		return 0, err
	}
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(p), nil
}

// read fills p with the guest bytes at off (inside the disk), reading
// host-contiguous data runs with one read each.
func (q *qcowImage) read(p []byte, off int64) error {
	var pendHost int64
	pendStart, pendLen := 0, 0
	flush := func() error {
		if pendLen == 0 {
			return nil
		}
		b := p[pendStart : pendStart+pendLen]
		if err := ReadFullAt(q.ra, b, pendHost); err != nil {
			guest := off + int64(pendStart)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return qcowCorrupt(q.name, "the data for guest offset %d (%d bytes at file offset %d) is cut short by the end of the file", guest, len(b), pendHost)
			}
			return fmt.Errorf("%s: reading guest offset %d (file offset %d): %w", q.name, guest, pendHost, err)
		}
		pendLen = 0
		return nil
	}
	for pos := 0; pos < len(p); {
		g := off + int64(pos)
		r, err := q.lookup(g)
		if err != nil {
			return err
		}
		n := int(min(r.length, int64(len(p)-pos)))
		if r.kind == runData {
			if pendLen > 0 && pendHost+int64(pendLen) == r.host {
				pendLen += n
			} else {
				if err := flush(); err != nil {
					return err
				}
				pendHost, pendStart, pendLen = r.host, pos, n
			}
			pos += n
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		b := p[pos : pos+n]
		switch r.kind {
		case runZero:
			clear(b)
		case runBacking:
			if err := q.readBacking(b, g); err != nil {
				return err
			}
		case runCompressed:
			if err := q.readCompressed(b, g, r); err != nil {
				return err
			}
		}
		pos += n
	}
	return flush()
}

// readBacking reads unallocated guest bytes from the backing file: zeros
// past its end.
func (q *qcowImage) readBacking(b []byte, g int64) error {
	k := 0
	if bs := q.backing.Size(); g < bs {
		k = int(min(int64(len(b)), bs-g))
		n, err := q.backing.ReadAt(b[:k], g)
		if n < k {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%s: reading guest offset %d from the backing file %q: %w", q.name, g+int64(n), q.header.backing, err)
		}
	}
	clear(b[k:])
	return nil
}

// readCompressed fills b with the bytes at guest offset g of the
// compressed cluster r.
func (q *qcowImage) readCompressed(b []byte, g int64, r qcowRun) error {
	if g == r.cstart && int64(len(b)) == q.cluster {
		return q.decompress(b, r)
	}
	bp := q.clusterBuf(&q.clusterUp, q.cluster)
	defer q.clusterUp.Put(bp)
	if err := q.decompress(*bp, r); err != nil {
		return err
	}
	copy(b, (*bp)[g-r.cstart:])
	return nil
}

func (q *qcowImage) clusterBuf(pool *sync.Pool, n int64) *[]byte {
	if bp, ok := pool.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, n)
	return &b
}

var (
	deflatePool sync.Pool
	zstdPool    sync.Pool
)

// flateCheckNext reads the next byte of a deflate stream that filled
// its cluster: nil when there is one or the stream ended, the decoder's
// error when what follows is corrupt.
func flateCheckNext(r io.Reader) error {
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		switch {
		case n > 0 || errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
	}
}

// decompress fills dst (one cluster) from the compressed cluster r: the
// data must decode to a whole cluster, as qemu requires; what follows
// inside the last sector is ignored.
func (q *qcowImage) decompress(dst []byte, r qcowRun) error {
	in := q.clusterBuf(&q.clusterIn, 2*q.cluster)
	defer q.clusterIn.Put(in)
	n := r.csize
	if q.fileSize >= 0 {
		n = min(n, q.fileSize-r.host)
	}
	m, err := q.ra.ReadAt((*in)[:n], r.host)
	if int64(m) < n && (q.fileSize >= 0 || !errors.Is(err, io.EOF)) {
		if err == nil || errors.Is(err, io.EOF) {
			return qcowCorrupt(q.name, "the compressed cluster for guest offset %d (%d bytes at file offset %d) is cut short by the end of the file", r.cstart, n, r.host)
		}
		return fmt.Errorf("%s: reading the compressed cluster for guest offset %d (file offset %d): %w", q.name, r.cstart, r.host, err)
	}
	src := bytes.NewReader((*in)[:m])
	var derr error
	switch q.header.compression {
	case "zstd":
		d, _ := zstdPool.Get().(*zstd.Decoder)
		if d == nil {
			if d, derr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(4<<20)); derr != nil {
				return derr
			}
		}
		// A reader that hides its length: the decoder then stops at the
		// end of the cluster instead of decoding (and tripping over) the
		// slack after the frame.
		if derr = d.Reset(struct{ io.Reader }{src}); derr == nil {
			_, derr = io.ReadFull(d, dst)
		}
		if derr == nil {
			// qemu writes clusters without a content checksum: the
			// corruption the decoder lets through is looked for here.
			derr = zstdCheckFrame((*in)[:m])
		}
		d.Reset(nil)
		zstdPool.Put(d)
	default:
		fr, _ := deflatePool.Get().(io.ReadCloser)
		if fr == nil {
			fr = flate.NewReader(src)
		} else if derr = fr.(flate.Resetter).Reset(src, nil); derr != nil {
			return derr
		}
		_, derr = io.ReadFull(fr, dst)
		if derr == nil {
			// zlib (qemu) decodes past a cluster's last byte up to the
			// next symbol: a corrupt one there makes qemu refuse the
			// cluster (EIO), so bty refuses it too. More valid data, or
			// the stream's end, is fine for both.
			derr = flateCheckNext(fr)
		}
		deflatePool.Put(fr)
	}
	if derr != nil {
		what := "does not decompress"
		if errors.Is(derr, io.ErrUnexpectedEOF) || errors.Is(derr, io.EOF) {
			what = "decompresses to less than a cluster"
		}
		return &formatError{kind: ErrCorrupt, cause: derr, msg: fmt.Sprintf(
			"%s: corrupt qcow2 image: the %s-compressed cluster for guest offset %d (%d bytes at file offset %d) %s (%v)",
			q.name, q.header.compression, r.cstart, m, r.host, what, derr)}
	}
	return nil
}

// Extent reports zero clusters, and unallocated clusters without backing
// data, as Zero; data and compressed clusters, and what the backing file
// holds, as data.
func (q *qcowImage) Extent(start, length int64) (Extent, error) {
	if start < 0 || length <= 0 || start >= q.size {
		return Extent{}, fmt.Errorf("%s: extent [%d, +%d) outside the image (size %d)", q.name, start, length, q.size)
	}
	end := min(start+length, q.size)
	out := Extent{Start: start}
	for pos := start; pos < end; {
		r, err := q.lookup(pos)
		if err != nil {
			return Extent{}, err
		}
		n := min(r.length, end-pos)
		zero := false
		switch r.kind {
		case runZero:
			zero = true
		case runBacking:
			if bs := q.backing.Size(); pos >= bs {
				zero = true
			} else {
				e, err := q.backing.Extent(pos, min(n, bs-pos))
				if err != nil {
					return Extent{}, fmt.Errorf("%s: mapping guest offset %d in the backing file %q: %w", q.name, pos, q.header.backing, err)
				}
				zero, n = e.Zero, e.Length
			}
		}
		if pos == start {
			out.Zero = zero
		} else if zero != out.Zero {
			break
		}
		out.Length += n
		pos += n
	}
	return out, nil
}

func (q *qcowImage) detail() (*QcowDetail, error) {
	alloc, err := allocatedBytes(q)
	if err != nil {
		return nil, err
	}
	return &QcowDetail{
		Version:        q.header.version,
		ClusterSize:    q.cluster,
		Compression:    q.header.compression,
		BackingFile:    q.header.backing,
		AllocatedBytes: alloc,
	}, nil
}

// resolveBacking applies the backing-file policy: only a local file in
// the same directory as the image. It returns the backing file's path.
func resolveBacking(imagePath, imageName, backing string, local bool) (string, error) {
	hint := fmt.Sprintf("flatten it with: qemu-img convert -O qcow2 %s flat.qcow2", filepath.Base(imageName))
	if !local {
		return "", fmt.Errorf("%s has a backing file %q; bty follows backing files only for local images, with the backing file next to them: %s",
			imageName, backing, hint)
	}
	dir := filepath.Dir(imagePath)
	p := backing
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	p = filepath.Clean(p)
	if filepath.Dir(p) != filepath.Clean(dir) {
		return "", fmt.Errorf("%s has a backing file %q outside its directory %s; bty follows only a backing file next to the image: %s",
			imageName, backing, dir, hint)
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("%s needs its backing file %q (%s), which cannot be opened: %w", imageName, backing, p, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s needs its backing file %q (%s), which is not a regular file", imageName, backing, p)
	}
	return p, nil
}

// backingRaw is a raw backing file, closed with the image.
type backingRaw struct{ *rawFile }

func (b backingRaw) Close() error { return b.f.Close() }

// openQcowBacking opens q's backing file under the backing-file policy,
// raw or qcow2 as the header says (or as its magic says when it does not).
func openQcowBacking(q *qcowImage, localPath string, depth int) (qcowBacking, error) {
	h := q.header
	p, err := resolveBacking(localPath, q.name, h.backing, localPath != "")
	if err != nil {
		return nil, err
	}
	if depth+1 >= maxBackingDepth {
		return nil, fmt.Errorf("%s: the backing chain is longer than %d files (a loop?): flatten it with qemu-img convert -O qcow2", q.name, maxBackingDepth)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%s needs its backing file %q: %w", q.name, h.backing, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	format := h.backingFormat
	if format == "" {
		var head [4]byte
		f.ReadAt(head[:], 0)
		format = "raw"
		if Detect(head[:]) == Qcow2 {
			format = "qcow2"
		}
	}
	switch format {
	case "raw":
		return backingRaw{&rawFile{f: f, name: p, size: st.Size()}}, nil
	case "qcow2":
		b, err := openQcowChain(p, p, f, st.Size(), depth+1)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: cannot use its backing file %q: %w", q.name, h.backing, err)
		}
		return backingQcow{b, f}, nil
	default:
		f.Close()
		return nil, qcowUnsupported(q.name, "its backing file %q is %s, which bty does not read as a backing file (only raw and qcow2): flatten it with qemu-img convert -O qcow2 %s flat.qcow2",
			h.backing, format, filepath.Base(q.name))
	}
}

// backingQcow is a qcow2 backing file, closed (with its own chain) with
// the image.
type backingQcow struct {
	*qcowImage
	f *os.File
}

func (b backingQcow) Close() error {
	err := b.qcowImage.Close()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// l2Cache keeps recently used L2 tables, keyed by L1 index, least
// recently used first out. Tables are never changed once cached.
type l2Cache struct {
	mu    sync.Mutex
	max   int
	items map[int64]*list.Element
	order list.List
}

type l2CacheItem struct {
	key   int64
	table []uint64
}

func (c *l2Cache) init(max int) {
	c.max = max
	c.items = map[int64]*list.Element{}
}

func (c *l2Cache) get(key int64) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*l2CacheItem).table
	}
	return nil
}

func (c *l2Cache) put(key int64, t []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&l2CacheItem{key: key, table: t})
	for c.order.Len() > c.max {
		el := c.order.Back()
		c.order.Remove(el)
		delete(c.items, el.Value.(*l2CacheItem).key)
	}
}
