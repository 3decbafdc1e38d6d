package image

import "errors"

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
