package image

import (
	"errors"
	"fmt"
	"io"
)

// ErrCorrupt matches (with errors.Is) every error about an image whose
// bytes break its format's rules: a bad checksum, a metadata entry that
// points outside the file, a stream that ends early. Such an image is
// never flashed "successfully"; the message names what is wrong and where.
var ErrCorrupt = errors.New("corrupt image")

// ErrUnsupported matches errors about an image that is valid but uses
// something bty does not decode (a foreign disk format, an encrypted
// qcow2, an xz filter it lacks). The message says what to do instead.
var ErrUnsupported = errors.New("unsupported image")

// formatError is an error of kind ErrCorrupt or ErrUnsupported with a
// message for the user and, optionally, the error that caused it.
type formatError struct {
	kind  error
	msg   string
	cause error
}

func (e *formatError) Error() string        { return e.msg }
func (e *formatError) Is(target error) bool { return target == e.kind }
func (e *formatError) Unwrap() error        { return e.cause }

// ReadFullAt reads exactly len(p) bytes at off. Every byte must arrive: a
// short read is an error wrapping io.ErrUnexpectedEOF that says where the
// data ends, also when the reader paired it with io.EOF, which the flash
// engine once took for the end of the image. A full read paired with
// io.EOF (allowed at the end of a source) is a success.
func ReadFullAt(ra io.ReaderAt, p []byte, off int64) error {
	n, err := ra.ReadAt(p, off)
	if n == len(p) && (err == nil || errors.Is(err, io.EOF)) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("%d of %d bytes at offset %d arrived, the data ends at offset %d: %w",
			n, len(p), off, off+int64(n), io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("reading offset %d: %w", off+int64(n), err)
}
