package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
	qimage "github.com/lima-vm/go-qcow2reader/image"
	"github.com/lima-vm/go-qcow2reader/image/qcow2"
	"github.com/lima-vm/go-qcow2reader/image/raw"
	"github.com/lima-vm/go-qcow2reader/image/stub"
	qlog "github.com/lima-vm/go-qcow2reader/log"
)

func init() {
	// go-qcow2reader keeps its decompressors in a global map read without
	// locks: register ours once, before any image is opened.
	qcow2.SetDecompressor(qcow2.CompressionTypeZlib, decompressDeflate)
	qcow2.SetDecompressor(qcow2.CompressionTypeZstd, decompressZstd)
	// Its warnings go to the standard logger by default, which would
	// scribble over the TUI.
	qlog.SetWarnFunc(func(s string) { slog.Debug("go-qcow2reader: " + s) })
}

// clusterBufs holds compressed cluster bytes (at most 2 MiB clusters plus
// the sector slack of the descriptor).
var clusterBufs = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

// readSection reads a compressed cluster's bytes; the section may run
// past the end of the file for the last cluster.
func readSection(r io.Reader) (*[]byte, error) {
	bp := clusterBufs.Get().(*[]byte)
	buf := bytes.NewBuffer((*bp)[:0])
	_, err := buf.ReadFrom(r)
	*bp = buf.Bytes()
	if err != nil {
		clusterBufs.Put(bp)
		return nil, err
	}
	return bp, nil
}

// fullReader makes each Read fill p: go-qcow2reader reads a cluster with
// one Read and would decompress the cluster again for a short one.
type fullReader struct {
	r     io.Reader
	close func()
}

func (f *fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (f *fullReader) Close() error {
	if f.close != nil {
		f.close()
		f.close = nil
	}
	return nil
}

var deflatePool sync.Pool

// decompressDeflate decodes qcow2's "zlib" clusters (raw deflate) with
// klauspost's faster flate, reusing decoders.
func decompressDeflate(r io.Reader) (io.ReadCloser, error) {
	bp, err := readSection(r)
	if err != nil {
		return nil, err
	}
	br := bytes.NewReader(*bp)
	fr, _ := deflatePool.Get().(io.ReadCloser)
	if fr == nil {
		fr = flate.NewReader(br)
	} else if err := fr.(flate.Resetter).Reset(br, nil); err != nil {
		return nil, err
	}
	return &fullReader{r: fr, close: func() {
		deflatePool.Put(fr)
		clusterBufs.Put(bp)
	}}, nil
}

var zstdPool sync.Pool

// decompressZstd decodes qcow2 zstd clusters. Each is one zstd frame
// followed by slack up to the next sector, so it is read as a stream (to
// stop at the cluster's end) from a reader that hides its length (which
// would make the decoder decode everything at once and trip on the slack).
func decompressZstd(r io.Reader) (io.ReadCloser, error) {
	bp, err := readSection(r)
	if err != nil {
		return nil, err
	}
	d, _ := zstdPool.Get().(*zstd.Decoder)
	if d == nil {
		d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(4<<20))
		if err != nil {
			return nil, err
		}
	}
	if err := d.Reset(struct{ io.Reader }{bytes.NewReader(*bp)}); err != nil {
		return nil, err
	}
	return &fullReader{r: d, close: func() {
		d.Reset(nil)
		zstdPool.Put(d)
		clusterBufs.Put(bp)
	}}, nil
}

// qcowHeader is what bty checks before handing the file to
// go-qcow2reader, which trusts its header (a huge L1 size or cluster size
// would make it allocate without bound).
type qcowHeader struct {
	version     int
	clusterBits uint32
	size        int64
	l1Size      uint32
	l1Offset    uint64
	backing     string
	compression string
}

// checkQcow2 reads and validates the header of the qcow2 image in ra
// (fileSize bytes, -1 if unknown).
func checkQcow2(ra io.ReaderAt, fileSize int64, name string) (*qcowHeader, error) {
	var b [112]byte
	n, err := ra.ReadAt(b[:], 0)
	if n < 72 {
		return nil, fmt.Errorf("%s: qcow2 header cut short (%d bytes): %v", name, n, err)
	}
	be := binary.BigEndian
	h := &qcowHeader{
		version:     int(be.Uint32(b[4:])),
		clusterBits: be.Uint32(b[20:]),
		size:        int64(be.Uint64(b[24:])),
		l1Size:      be.Uint32(b[36:]),
		l1Offset:    be.Uint64(b[40:]),
		compression: "zlib",
	}
	if h.version != 2 && h.version != 3 {
		return nil, fmt.Errorf("%s: qcow2 version %d is not supported (only 2 and 3): convert it with qemu-img convert -O qcow2", name, h.version)
	}
	if h.clusterBits < 9 || h.clusterBits > 21 {
		return nil, fmt.Errorf("%s: corrupt qcow2 header: cluster bits %d outside 9..21", name, h.clusterBits)
	}
	if crypt := be.Uint32(b[32:]); crypt != 0 {
		method := map[uint32]string{1: "AES", 2: "LUKS"}[crypt]
		return nil, fmt.Errorf("%s: encrypted qcow2 (%s) is not supported: decrypt it with qemu-img convert first", name, method)
	}
	if h.size <= 0 || h.size > 1<<56 {
		return nil, fmt.Errorf("%s: corrupt qcow2 header: virtual size %d", name, h.size)
	}
	cs := int64(1) << h.clusterBits
	perL2 := cs / 8
	need := (h.size + cs*perL2 - 1) / (cs * perL2)
	if int64(h.l1Size) < need || h.l1Size > 32<<20/8 || h.l1Offset == 0 || h.l1Offset%512 != 0 ||
		(fileSize >= 0 && int64(h.l1Offset)+int64(h.l1Size)*8 > fileSize) {
		return nil, fmt.Errorf("%s: corrupt qcow2 header: L1 table (%d entries at offset %d) does not fit a %d-byte image in a %d-byte file",
			name, h.l1Size, h.l1Offset, h.size, fileSize)
	}
	if h.version == 3 {
		if n < 104 {
			return nil, fmt.Errorf("%s: qcow2 v3 header cut short", name)
		}
		incompat := be.Uint64(b[72:])
		hlen := be.Uint32(b[100:])
		for bit := range 64 {
			if incompat&(1<<bit) == 0 {
				continue
			}
			switch bit {
			case 0: // dirty: refcounts may be stale; the mapping is fine.
			case 1:
				return nil, fmt.Errorf("%s: the qcow2 image is marked corrupt: check it with qemu-img check -r all", name)
			case 2:
				return nil, fmt.Errorf("%s: qcow2 with an external data file is not supported: convert it with qemu-img convert -O qcow2", name)
			case 3:
				if hlen <= 104 || n < 105 {
					return nil, fmt.Errorf("%s: corrupt qcow2 header: compression type bit without the field", name)
				}
				switch b[104] {
				case 0:
				case 1:
					h.compression = "zstd"
				default:
					return nil, fmt.Errorf("%s: qcow2 compression type %d is not supported (only zlib and zstd)", name, b[104])
				}
			case 4:
				return nil, fmt.Errorf("%s: qcow2 with extended L2 entries is not supported: convert it with qemu-img convert -O qcow2", name)
			default:
				return nil, fmt.Errorf("%s: qcow2 uses unknown incompatible feature bit %d: convert it with qemu-img convert -O qcow2", name, bit)
			}
		}
	}
	if off, size := be.Uint64(b[8:]), be.Uint32(b[16:]); off != 0 && size != 0 {
		if size > 1023 {
			return nil, fmt.Errorf("%s: corrupt qcow2 header: backing file name of %d bytes", name, size)
		}
		nb := make([]byte, size)
		if _, err := ra.ReadAt(nb, int64(off)); err != nil {
			return nil, fmt.Errorf("%s: reading the qcow2 backing file name: %w", name, err)
		}
		h.backing = string(nb)
	}
	return h, nil
}

// namedReaderAt gives go-qcow2reader a name to resolve backing files
// against without handing it the source's Close.
type namedReaderAt struct {
	io.ReaderAt
	name string
}

func (n namedReaderAt) Name() string { return n.name }

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

// maxBackingDepth bounds backing chains (and loops).
const maxBackingDepth = 8

// openBacking is go-qcow2reader's opener for backing files, applying
// bty's checks at every level of the chain.
func openBacking(depth int) qimage.OpenWithType {
	return func(ra io.ReaderAt, t qimage.Type) (img qimage.Image, err error) {
		f, _ := ra.(*os.File)
		defer func() {
			if err != nil {
				if f != nil {
					f.Close()
				}
				// go-qcow2reader calls Close on the result even on error.
				img = &stub.Stub{}
			}
		}()
		if f == nil {
			return nil, errors.New("backing file is not a local file")
		}
		if depth >= maxBackingDepth {
			return nil, fmt.Errorf("backing chain longer than %d files (a loop?)", maxBackingDepth)
		}
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if t == "" {
			var head [4]byte
			f.ReadAt(head[:], 0)
			t = raw.Type
			if Detect(head[:]) == Qcow2 {
				t = qcow2.Type
			}
		}
		switch t {
		case raw.Type:
			return raw.Open(f)
		case qcow2.Type:
			h, err := checkQcow2(f, st.Size(), f.Name())
			if err != nil {
				return nil, err
			}
			if h.backing != "" {
				if _, err := resolveBacking(f.Name(), f.Name(), h.backing, true); err != nil {
					return nil, err
				}
			}
			q, err := qcow2.Open(f, openBacking(depth+1))
			if err != nil {
				return nil, err
			}
			if err := q.Readable(); err != nil {
				q.Close()
				return nil, err
			}
			return q, nil
		default:
			return nil, fmt.Errorf("backing file format %q is not supported (only raw and qcow2)", t)
		}
	}
}

// qcowImage is a qcow2 image read through go-qcow2reader.
type qcowImage struct {
	name    string
	img     *qcow2.Qcow2
	header  *qcowHeader
	cluster int64
	size    int64
}

var _ RandomAccess = (*qcowImage)(nil)

func openQcow2(name, localPath string, ra io.ReaderAt, fileSize int64) (*qcowImage, error) {
	if ra == nil {
		return nil, fmt.Errorf("%s is qcow2, which needs random access: the server must support HTTP Range requests", name)
	}
	h, err := checkQcow2(ra, fileSize, name)
	if err != nil {
		return nil, err
	}
	target := ra
	if localPath != "" {
		target = namedReaderAt{ra, localPath}
	}
	if h.backing != "" {
		if _, err := resolveBacking(localPath, name, h.backing, localPath != ""); err != nil {
			return nil, err
		}
	}
	img, err := safeCall(name, 0, func() (*qcow2.Qcow2, error) { return qcow2.Open(target, openBacking(1)) })
	if err != nil {
		if img != nil {
			img.Close()
		}
		return nil, fmt.Errorf("%s: opening qcow2: %w", name, err)
	}
	if err := img.Readable(); err != nil {
		img.Close()
		if h.backing != "" {
			return nil, fmt.Errorf("%s: cannot use its backing file %q: %w", name, h.backing, err)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &qcowImage{name: name, img: img, header: h, cluster: 1 << h.clusterBits, size: h.size}, nil
}

// safeCall runs f, turning a panic inside go-qcow2reader on corrupt input
// into an error naming the guest offset. A last resort: the header checks
// above keep known panics from happening.
func safeCall[T any](name string, off int64, f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: corrupt qcow2 near guest offset %d: %v", name, off, r)
		}
	}()
	return f()
}

func (q *qcowImage) Format() Format { return Qcow2 }
func (q *qcowImage) Size() int64    { return q.size }

// Close closes backing files; the image's own file belongs to the source.
func (q *qcowImage) Close() error { return q.img.Close() }

// ReadAt is safe for concurrent use: go-qcow2reader's L2 cache is locked
// and every read is a pread.
func (q *qcowImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", q.name, off)
	}
	if off >= q.size {
		return 0, io.EOF
	}
	// go-qcow2reader fills the whole last cluster, past the virtual size.
	short := false
	if rem := q.size - off; int64(len(p)) > rem {
		p, short = p[:rem], true
	}
	type result struct {
		n   int
		err error
	}
	r, perr := safeCall(q.name, off, func() (result, error) {
		n, err := q.img.ReadAt(p, off)
		return result{n, err}, nil
	})
	if perr != nil {
		return 0, perr
	}
	if r.err != nil && r.err != io.EOF {
		return r.n, fmt.Errorf("%s: reading guest offset %d: %w", q.name, off+int64(r.n), r.err)
	}
	if (r.err == nil && r.n < len(p)) || short {
		return r.n, io.EOF
	}
	return r.n, r.err
}

// Extent reports unallocated clusters (without a backing file to fall
// through to) and zero clusters as Zero; allocated and compressed
// clusters, and clusters read from a backing file, are data.
// go-qcow2reader's own Extent mis-clips an unaligned start, so it is only
// asked about whole clusters here.
func (q *qcowImage) Extent(start, length int64) (Extent, error) {
	if start < 0 || length <= 0 || start >= q.size {
		return Extent{}, fmt.Errorf("%s: extent [%d, +%d) outside the image (size %d)", q.name, start, length, q.size)
	}
	end := min(start+length, q.size)
	var out Extent
	for pos := start; pos < end; {
		as := pos / q.cluster * q.cluster
		ae := min((end+q.cluster-1)/q.cluster*q.cluster, q.size)
		e, err := safeCall(q.name, pos, func() (qimage.Extent, error) { return q.img.Extent(as, ae-as) })
		if err != nil {
			return Extent{}, fmt.Errorf("%s: mapping guest offset %d: %w", q.name, pos, err)
		}
		if e.Length <= 0 {
			return Extent{}, fmt.Errorf("%s: mapping guest offset %d: empty extent", q.name, pos)
		}
		eEnd := min(as+e.Length, end)
		if pos == start {
			out = Extent{Start: start, Length: eEnd - start, Zero: e.Zero}
		} else if e.Zero == out.Zero {
			out.Length = eEnd - start
		} else {
			break
		}
		pos = eEnd
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
