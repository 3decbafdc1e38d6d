// Package ctxio is I/O that stops once a context is done: a reader and a
// writer that fail with the context's error, and the sha256 sums bty
// computes that way (image files, downloaded packages, decoded images),
// so that Ctrl-C or a server shutdown ends a long read.
package ctxio

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
)

// NewReader returns a reader that reads r but fails with ctx's error,
// before reading, once ctx is done.
func NewReader(ctx context.Context, r io.Reader) io.Reader { return &reader{ctx: ctx, r: r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c *reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// NewWriter returns a writer that writes to w but fails with ctx's
// error, before writing, once ctx is done.
func NewWriter(ctx context.Context, w io.Writer) io.Writer { return &writer{ctx: ctx, w: w} }

type writer struct {
	ctx context.Context
	w   io.Writer
}

func (c *writer) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// SHA256 reads r to its end and returns the hex sha256 of its bytes.
func SHA256(ctx context.Context, r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, NewReader(ctx, r), make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FileSHA256 returns the hex sha256 of the file at path.
func FileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return SHA256(ctx, f)
}
