package image

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	xi2xz "github.com/btyproject/bty/internal/image/internal/xz"
	dbzip2 "github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// inputBuffer is the read-ahead in front of every decoder: decoders read
// in small pieces and must not turn each into a read on the source.
const inputBuffer = 1 << 20

// zstdMaxWindow admits `zstd --long` (128 MiB windows); larger windows
// would break the memory budget.
const zstdMaxWindow = 1 << 27

// zstdConcurrency is WithDecoderConcurrency for stream decoding. Any
// value above 1 runs klauspost's three-stage pipeline; the value also
// sizes the queues between the stages, and 4 kept the stages busier
// than GOMAXPROCS (2 here) while a flash-like consumer competed for the
// CPU (TestRealDecode with BTY_REAL_BENCH_ENGINE=1: 0 (=2) ~1.76 GB/s,
// 1 ~1.86, 3 ~1.87, 4 ~2.15, 8 ~2.3 at 11 MiB more RSS). A variable so
// that benchmark can try others.
var zstdConcurrency = 4

// xzDictMax admits `xz -9` (64 MiB dictionaries).
const xzDictMax = 1 << 26

// countReader counts the bytes read from the source and marks its
// errors (other than io.EOF) as the source's, not the decoder's.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}

// sourceError is an error reading the encoded bytes (a file or a
// download), as opposed to an error in them.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// stream decodes a compressed source sequentially. Every early end or
// corrupt byte becomes a sticky error naming the compressed and decoded
// offsets.
type stream struct {
	format Format
	name   string
	size   int64 // -1 when unknown
	src    io.ReadCloser
	count  *countReader
	br     *bufio.Reader
	dec    io.Reader
	close  func()
	out    int64
	err    error
	rle    *zstdRLEAsRaw // zstd only
}

var _ Stream = (*stream)(nil)

func (s *stream) Format() Format { return s.format }
func (s *stream) Size() int64    { return s.size }

// compressedOffset is how far into the encoded bytes the decoder got.
func (s *stream) compressedOffset() int64 {
	if s.br == nil {
		return s.count.n
	}
	return s.count.n - int64(s.br.Buffered())
}

// fail makes err the stream's sticky error, saying what it means for the
// user: an error of the source as it is, something the decoder does not
// support as ErrUnsupported with what to do, anything else about the
// bytes as ErrCorrupt (truncated or corrupt) naming the offsets.
func (s *stream) fail(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	var se *sourceError
	xzMsg := xzUnsupported(s.name, err)
	switch {
	case s.rle != nil && s.rle.err != nil:
		s.err = &formatError{kind: ErrCorrupt, cause: s.rle.err, msg: fmt.Sprintf(
			"%s: corrupt zstd data in the block at compressed offset %d: %v; the frame has no content checksum, and zstd 1.5.6 and later refuse it too",
			s.name, s.rle.blockOff, s.rle.err)}
	case errors.As(err, &se):
		s.err = fmt.Errorf("%s: reading the %s data at compressed offset %d (decoded offset %d): %w",
			s.name, describe[s.format], s.compressedOffset(), s.out, se.err)
	case s.rle != nil && s.rle.bigWindow > 0 && errors.Is(err, zstd.ErrWindowSizeExceeded):
		s.err = zstdWindowError(s.name, s.rle.bigWindow, s.compressedOffset())
	case xzMsg != "":
		s.err = &formatError{kind: ErrUnsupported, cause: err, msg: fmt.Sprintf("%s: %s (at compressed offset %d)",
			s.name, xzMsg, s.compressedOffset())}
	default:
		what := "corrupt"
		if errors.Is(err, io.ErrUnexpectedEOF) {
			what = "truncated"
		}
		s.err = &formatError{kind: ErrCorrupt, cause: err, msg: fmt.Sprintf("%s: %s %s data at compressed offset %d (decoded offset %d): %v",
			s.name, what, describe[s.format], s.compressedOffset(), s.out, err)}
	}
	return s.err
}

// xzUnsupported says what an xz error means when the file is valid but
// uses something the decoder lacks, with the command that makes a file
// bty reads; "" for other errors.
func xzUnsupported(name string, err error) string {
	recompress := fmt.Sprintf("recompress it with xz's defaults, which bty decodes: xz -dc %s | xz -T0 > NEW.img.xz", filepath.Base(name))
	var fe *xi2xz.FilterError
	switch {
	case errors.As(err, &fe) && fe.Name != "":
		return fmt.Sprintf("uses the xz %s filter (ID 0x%02x), which bty does not decode: %s", fe.Name, fe.ID, recompress)
	case errors.As(err, &fe):
		return fmt.Sprintf("uses an xz filter (ID 0x%02x) the .xz format does not define, which bty does not decode: %s", fe.ID, recompress)
	case errors.Is(err, xi2xz.ErrOptions):
		return "uses xz options bty does not decode: " + recompress
	case errors.Is(err, xi2xz.ErrMemlimit):
		return fmt.Sprintf("needs an LZMA2 dictionary larger than %d MiB, which bty does not allocate: recompress it with at most xz -9: xz -dc %s | xz -T0 -9 > NEW.img.xz",
			xzDictMax>>20, filepath.Base(name))
	case errors.Is(err, xi2xz.ErrUnsupportedCheck):
		return "uses an integrity check type bty cannot verify (only none, CRC32, CRC64 and SHA-256): " + recompress
	}
	return ""
}

func (s *stream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.dec.Read(p)
	s.out += int64(n)
	if s.size >= 0 && s.out > s.size {
		return n, s.fail(fmt.Errorf("decodes to more than the %d bytes it declares", s.size))
	}
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF:
		if s.rle != nil && s.rle.finish() != nil {
			return n, s.fail(s.rle.err)
		}
		if s.size >= 0 && s.out != s.size {
			return n, s.fail(fmt.Errorf("ends after %d of the %d bytes it declares", s.out, s.size))
		}
		if s.br != nil {
			if _, perr := s.br.Peek(1); perr != io.EOF {
				if perr == nil {
					perr = errors.New("trailing data after the end of the compressed stream")
				}
				return n, s.fail(perr)
			}
		}
		s.err = io.EOF
		return n, io.EOF
	default:
		return n, s.fail(err)
	}
}

// WriteTo writes the rest of the decoded stream to w, with the checks
// Read makes (declared size, trailing data, offsets in errors). A zstd
// stream hands w the decoder's own block buffers (up to 128 KiB each,
// valid only during the Write call), which saves the copy into a
// caller's buffer; other formats go through Read. Errors from w are
// returned as they are; decoding errors are sticky as with Read.
func (s *stream) WriteTo(w io.Writer) (int64, error) {
	if s.err != nil {
		if s.err == io.EOF {
			return 0, nil
		}
		return 0, s.err
	}
	if wt, ok := s.dec.(*zstd.Decoder); ok {
		cw := &checkedWriter{s: s, w: w}
		n, err := wt.WriteTo(cw)
		switch {
		case cw.werr != nil:
			s.err = cw.werr
			return n, cw.werr
		case cw.over != nil:
			return n, cw.over
		case err != nil:
			return n, s.fail(err)
		}
		if _, err := s.Read(nil); err != io.EOF {
			return n, err
		}
		return n, nil
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := s.Read(buf)
		if k > 0 {
			m, werr := w.Write(buf[:k])
			n += int64(m)
			if werr == nil && m < k {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, werr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// checkedWriter counts what a decoder's WriteTo passes on and stops it
// when the stream decodes to more than it declares.
type checkedWriter struct {
	s    *stream
	w    io.Writer
	werr error // from w
	over error // the size check
}

func (c *checkedWriter) Write(p []byte) (int, error) {
	s := c.s
	if s.size >= 0 && s.out+int64(len(p)) > s.size {
		s.out += int64(len(p))
		c.over = s.fail(fmt.Errorf("decodes to more than the %d bytes it declares", s.size))
		return 0, c.over
	}
	n, err := c.w.Write(p)
	s.out += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		c.werr = err
	}
	return n, err
}

func (s *stream) Close() error {
	if s.close != nil {
		s.close() // the zstd decoder waits for its goroutines, the last readers of rle
		s.close = nil
	}
	if s.rle != nil {
		s.rle.finish() // stops the sequence check's goroutine
	}
	if s.err == nil {
		s.err = errors.New("image closed")
	}
	return s.src.Close()
}

// newStream wraps the opened source rc in the decoder for f.
func newStream(f Format, name string, rc io.ReadCloser, size int64) (*stream, error) {
	s := &stream{format: f, name: name, size: size, src: rc, count: &countReader{r: rc}}
	s.br = bufio.NewReaderSize(s.count, inputBuffer)
	var err error
	switch f {
	case Raw:
		// No trailing-data check: the size check covers a raw stream.
		s.dec, s.br = s.br, nil
		return s, nil
	case Zstd:
		var d *zstd.Decoder
		s.rle = newZstdRLEAsRaw(s.br)
		d, err = zstd.NewReader(s.rle, zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderConcurrency(zstdConcurrency))
		if err == nil {
			s.dec, s.close = d, d.Close
		}
	case Gzip:
		var d *gzip.Reader
		d, err = gzip.NewReader(s.br)
		if err == nil {
			s.dec = d
		}
	case Xz:
		var d *xi2xz.Reader
		d, err = xi2xz.NewReader(s.br, xzDictMax)
		if err == nil {
			s.dec = d
		}
	case Bzip2:
		// dsnet/compress/bzip2 decodes ~1.7x faster than compress/bzip2
		// here (BENCH in bench_test.go) and handles concatenated streams.
		var d *dbzip2.Reader
		d, err = dbzip2.NewReader(s.br, nil)
		if err == nil {
			s.dec = d
			s.close = func() { d.Close() }
		}
	default:
		err = fmt.Errorf("%s is not a stream format", f)
	}
	if err != nil {
		e := s.fail(err)
		rc.Close()
		return nil, e
	}
	return s, nil
}
