package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sort"

	"github.com/btyproject/bty/internal/source"
)

// head reads the first bytes of the source for Detect: from the
// ReaderAt when there is one, else from a freshly opened stream, which is
// returned (with the head still unread) for the caller to keep using.
func head(ctx context.Context, src source.Source) ([]byte, io.ReadCloser, error) {
	buf := make([]byte, 512)
	if ra := src.ReaderAt(); ra != nil {
		n, err := ra.ReadAt(buf, 0)
		if err != nil && err != io.EOF {
			return nil, nil, fmt.Errorf("reading %s: %w", src.Name(), err)
		}
		return buf[:n], nil, nil
	}
	rc, err := src.Open(ctx)
	if err != nil {
		return nil, nil, err
	}
	n, err := io.ReadFull(rc, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		rc.Close()
		return nil, nil, fmt.Errorf("reading %s: %w", src.Name(), err)
	}
	buf = buf[:n]
	return buf, &prefixedReadCloser{Reader: io.MultiReader(bytes.NewReader(buf), rc), c: rc}, nil
}

type prefixedReadCloser struct {
	io.Reader
	c io.Closer
}

func (p *prefixedReadCloser) Close() error { return p.c.Close() }

func localFile(src source.Source) *os.File {
	if f, ok := src.(source.Filer); ok {
		return f.File()
	}
	return nil
}

// Open recognises the image in src by its magic and returns a decoder:
// a RandomAccess for raw local files and qcow2, a Stream otherwise (raw
// without a local file, zst, gz, xz, bz2). A name whose suffix promises a
// different format than the magic is an error that says what to rename
// the file to; an unknown suffix trusts the magic. The Image does not
// close src.
func Open(ctx context.Context, src source.Source, opts Options) (Image, error) {
	h, rc, err := head(ctx, src)
	if err != nil {
		return nil, err
	}
	closeRC := func() {
		if rc != nil {
			rc.Close()
		}
	}
	name := src.Name()
	if len(h) == 0 {
		closeRC()
		return nil, fmt.Errorf("%s is empty", name)
	}
	f := Detect(h)
	if ff := detectRaw(src, h, f); ff != "" {
		closeRC()
		return nil, foreignError(name, ff)
	}
	if err := checkName(name, f); err != nil {
		closeRC()
		return nil, err
	}
	ra := src.ReaderAt()
	file := localFile(src)
	switch f {
	case Qcow2:
		closeRC()
		path := ""
		if file != nil {
			path = file.Name()
		}
		return openQcow2(name, path, ra, src.Size())
	case Raw:
		if file != nil {
			closeRC()
			size := src.Size()
			if size < 0 {
				st, err := file.Stat()
				if err != nil {
					return nil, err
				}
				size = st.Size()
			}
			return &rawFile{f: file, name: name, size: size}, nil
		}
	}
	size := int64(-1)
	switch f {
	case Raw:
		size = src.Size()
	case Xz:
		if ra != nil && src.Size() > 0 {
			// The index at the end describes every block: a file whose
			// index breaks the format is refused before anything is
			// decoded (or written).
			idx, err := readXzIndex(ra, src.Size())
			if err != nil {
				closeRC()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if len(idx.blocks) > 1 && opts.Workers != 1 {
				closeRC()
				return newParallelXz(ctx, name, ra, idx, opts), nil
			}
			size = idx.size
		}
	case Zstd:
		if ra != nil && file != nil {
			// A local file's frames are walked first: a cut, appended
			// bytes or an oversized window are refused before anything
			// is decoded (or written).
			zi, err := walkZstd(ra, src.Size(), name)
			if err != nil {
				closeRC()
				return nil, err
			}
			size = zi.total
		}
	}
	if rc == nil {
		if rc, err = src.Open(ctx); err != nil {
			return nil, err
		}
	}
	return newStream(f, name, rc, size)
}

// detectRaw looks closer at what Detect calls raw (f): a foreign format
// bty must refuse, by its magic or (with random access) its footer. It
// returns "" for a raw image and for every format Detect recognises.
func detectRaw(src source.Source, head []byte, f Format) Format {
	if f != Raw {
		return ""
	}
	return detectForeign(head, readTail(src.ReaderAt(), src.Size()), src.Name())
}

// zstdFrameHeader parses a zstd frame header at the start of b: its
// length and declared content size (-1 when absent).
func zstdFrameHeader(b []byte) (int, int64, error) {
	if len(b) < 6 || binary.LittleEndian.Uint32(b) != 0xfd2fb528 {
		return 0, -1, errors.New("no zstd frame header")
	}
	fhd := b[4]
	singleSeg := fhd&0x20 != 0
	fcsFlag := fhd >> 6
	p := 5
	if !singleSeg {
		p++ // window descriptor
	}
	p += []int{0, 1, 2, 4}[fhd&3] // dictionary id
	fcsLen := []int{0, 2, 4, 8}[fcsFlag]
	if fcsFlag == 0 && singleSeg {
		fcsLen = 1
	}
	if p+fcsLen > len(b) {
		return 0, -1, errors.New("zstd frame header cut short")
	}
	content := int64(-1)
	f := b[p : p+fcsLen]
	switch fcsLen {
	case 1:
		content = int64(f[0])
	case 2:
		content = int64(binary.LittleEndian.Uint16(f)) + 256
	case 4:
		content = int64(binary.LittleEndian.Uint32(f))
	case 8:
		content = int64(binary.LittleEndian.Uint64(f))
	}
	return p + fcsLen, content, nil
}

// zstdWindow returns the window size a zstd frame header (at the start
// of b, already parsed by zstdFrameHeader) declares: what the decoder
// must keep in memory.
func zstdWindow(b []byte, content int64) uint64 {
	if b[4]&0x20 != 0 { // single segment: the window is the content
		return uint64(max(content, 0))
	}
	wd := b[5]
	base := uint64(1) << (10 + wd>>3)
	return base + base/8*uint64(wd&7)
}

// zstdWindowError is the error for a frame whose window bty does not
// allocate.
func zstdWindowError(name string, window uint64, off int64) error {
	return &formatError{kind: ErrUnsupported, msg: fmt.Sprintf(
		"%s: the zstd frame at compressed offset %d needs a %d MiB window (made with zstd --long=%d or a high level); bty decodes windows up to %d MiB: "+
			"recompress it with: zstd -dc --long=31 %s | zstd -T0 --long=27 -o NEW.img.zst",
		name, off, window>>20, bits.Len64(window-1), zstdMaxWindow>>20, filepath.Base(name))}
}

// zstdFrames is what walking the frame headers tells.
type zstdFrames struct {
	frames int
	first  int64 // first frame's content size, -1 if absent
	total  int64 // sum of content sizes, -1 unless every frame has one
}

// walkZstd walks the frame and block headers of a zstd file (a few bytes
// per 128 KiB block, so it is only done for local files). A frame whose
// window bty would not allocate is ErrUnsupported; anything that breaks
// the frame format (trailing bytes included) is ErrCorrupt.
func walkZstd(ra io.ReaderAt, size int64, name string) (*zstdFrames, error) {
	corrupt := func(format string, args ...any) error {
		return &formatError{kind: ErrCorrupt, msg: fmt.Sprintf("%s: corrupt zstd file: ", name) + fmt.Sprintf(format, args...)}
	}
	z := &zstdFrames{first: -1}
	var hdr [18]byte
	off := int64(0)
	for off < size {
		n, _ := ra.ReadAt(hdr[:], off)
		if n < 8 {
			return nil, corrupt("the file ends inside the frame header at offset %d: it is truncated (an incomplete copy or download?)", off)
		}
		magic := binary.LittleEndian.Uint32(hdr[:4])
		if magic&0xfffffff0 == 0x184d2a50 { // skippable frame
			off += 8 + int64(binary.LittleEndian.Uint32(hdr[4:8]))
			continue
		}
		if magic != 0xfd2fb528 {
			if z.frames > 0 {
				return nil, corrupt("%d bytes after the last frame (which ends at offset %d) are not a zstd frame: the file has something appended", size-off, off)
			}
			return nil, corrupt("no zstd frame magic at offset %d", off)
		}
		p, content, err := zstdFrameHeader(hdr[:n])
		if err != nil {
			return nil, corrupt("%v at offset %d", err, off)
		}
		if hdr[4]&0x08 != 0 {
			return nil, corrupt("the frame header at offset %d has its reserved bit set", off)
		}
		if w := zstdWindow(hdr[:n], content); w > zstdMaxWindow {
			return nil, zstdWindowError(name, w, off)
		}
		fhd := hdr[4]
		if z.frames == 0 {
			z.first = content
			z.total = 0
		}
		if content < 0 || z.total < 0 {
			z.total = -1
		} else {
			z.total += content
		}
		z.frames++
		off += int64(p)
		for {
			var bh [3]byte
			if _, err := ra.ReadAt(bh[:], off); err != nil {
				return nil, corrupt("the file ends inside the block header at offset %d: it is truncated (an incomplete copy or download?)", off)
			}
			v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
			last, typ, bsize := v&1 != 0, (v>>1)&3, int64(v>>3)
			off += 3
			switch typ {
			case 1: // RLE: one byte
				off++
			case 3:
				return nil, corrupt("reserved block type at offset %d", off-3)
			default:
				off += bsize
			}
			if last {
				break
			}
		}
		if fhd&4 != 0 {
			off += 4 // content checksum
		}
	}
	if off != size {
		return nil, corrupt("the file ends at offset %d, inside its last frame (which would end at offset %d): it is truncated (an incomplete copy or download?)", size, off)
	}
	return z, nil
}

// Inspect describes the image in src without decoding it: the format by
// magic, its sizes and a format-specific Detail. A suffix that lies is an
// error; the returned Info then still carries what was found.
func Inspect(ctx context.Context, src source.Source) (Info, error) {
	info := Info{Name: baseName(src.Name()), Path: src.Name(), SizeBytes: src.Size()}
	h, rc, err := head(ctx, src)
	if rc != nil {
		rc.Close()
	}
	if err != nil {
		return info, err
	}
	if len(h) == 0 {
		return info, fmt.Errorf("%s is empty", src.Name())
	}
	info.Format = Detect(h)
	if ff := detectRaw(src, h, info.Format); ff != "" {
		info.Format = ff
		return info, foreignError(src.Name(), ff)
	}
	if err := checkName(src.Name(), info.Format); err != nil {
		return info, err
	}
	ra := src.ReaderAt()
	file := localFile(src)
	setVirtual := func(v int64) {
		if v >= 0 {
			info.VirtualSizeBytes = &v
		}
	}
	switch info.Format {
	case Raw:
		setVirtual(src.Size())
		if file != nil {
			img, err := Open(ctx, src, Options{})
			if err != nil {
				return info, err
			}
			defer img.Close()
			alloc, err := allocatedBytes(img.(RandomAccess))
			if err != nil {
				return info, err
			}
			info.Detail = &RawDetail{AllocatedBytes: alloc}
		}
	case Qcow2:
		path := ""
		if file != nil {
			path = file.Name()
		}
		q, err := openQcow2(src.Name(), path, ra, src.Size())
		if err != nil {
			return info, err
		}
		defer q.Close()
		setVirtual(q.size)
		d, err := q.detail()
		if err != nil {
			return info, err
		}
		info.Detail = d
	case Zstd:
		if ra != nil && file != nil {
			z, err := walkZstd(ra, src.Size(), src.Name())
			if err != nil {
				return info, err
			}
			d := &ZstdDetail{Frames: z.frames}
			if z.first >= 0 {
				d.FrameContentSize = &z.first
			}
			info.Detail = d
			setVirtual(z.total)
		} else if _, content, err := zstdFrameHeader(h); err == nil && content >= 0 {
			// A remote file: the first frame header only.
			info.Detail = &ZstdDetail{FrameContentSize: &content}
		}
	case Xz:
		if ra != nil && src.Size() > 0 {
			idx, err := readXzIndex(ra, src.Size())
			if err != nil {
				return info, fmt.Errorf("%s: %w", src.Name(), err)
			}
			info.Detail = &XzDetail{Streams: len(idx.streams), Blocks: len(idx.blocks), UncompressedSize: idx.size}
			setVirtual(idx.size)
		}
	}
	return info, nil
}

// List describes the images directly in root (not recursive): regular
// files (or symlinks to them), sorted by name, that have a known suffix
// or a known magic. A file that cannot be inspected is listed with Error
// set.
func List(root string) ([]Info, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("listing images in %s: %w", root, err)
	}
	var out []Info
	for _, e := range entries {
		p := filepath.Join(root, e.Name())
		if !e.Type().IsRegular() {
			if e.Type()&os.ModeSymlink == 0 {
				continue
			}
			if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
				continue
			}
		}
		_, known := FormatFromName(e.Name())
		src, err := source.OpenFile(p)
		if err != nil {
			if known {
				out = append(out, Info{Name: e.Name(), Path: p, Error: err.Error()})
			}
			continue
		}
		if !known {
			h, _, _ := head(context.Background(), src)
			if f := Detect(h); f == Raw && detectRaw(src, h, f) == "" {
				src.Close()
				continue
			}
		}
		info, err := Inspect(context.Background(), src)
		src.Close()
		if err != nil {
			info.Error = err.Error()
		}
		info.Name, info.Path = e.Name(), p
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
